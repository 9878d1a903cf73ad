"""`python -m advlab +experiment=NAME key=value ...`, or the `advlab` command: Hydra composes the configs
(conf/, installed as the package advlab.conf) and runs advlab.cli.main."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="pkg://advlab.conf", config_name="config")
def main(cfg: DictConfig):
    from advlab.cli import main as run_cli  # after Hydra has parsed the command line: --help stays fast

    return run_cli(cfg)


if __name__ == "__main__":
    main()
