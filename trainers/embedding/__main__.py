"""`python -m trainers.embedding --config FILE`: checks config and data, then trains (see trainers.common.cli)."""

from trainers.common.cli import main

if __name__ == "__main__":
    raise SystemExit(main("embedding", "trainers.embedding.train:train"))
