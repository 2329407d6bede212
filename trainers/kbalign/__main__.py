"""`python -m trainers.kbalign --config FILE`: checks config and knowledge base, then runs KBAlign (see
trainers.common.cli)."""

from trainers.common.cli import main

if __name__ == "__main__":
    raise SystemExit(main("kbalign", "trainers.kbalign.train:train"))
