"""`python -m trainers.export --config FILE`: checks the config and the fetched source, then exports (see
trainers.common.cli)."""

from trainers.common.cli import main

if __name__ == "__main__":
    raise SystemExit(main("export", "trainers.export.train:train"))
