"""`python -m advlab +experiment=NAME key=value ...`: Hydra reads conf/ and runs advlab.cli.run."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig):
    from advlab.cli import main as run  # after Hydra has parsed the command line: --help stays fast

    return run(cfg)


if __name__ == "__main__":
    main()
