# Makes conf/ the package advlab.conf in an installed advlab (pyproject: package-dir), so Hydra finds it as pkg://advlab.conf.
