"""Quality figures for the bundled dataset: near-duplicates and train/test overlap.

A near-duplicate is the same text after lower-casing and removing accents and
punctuation. Usage: python scripts/data_quality.py [data/chats_train.csv data/chats_test.csv]
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections import Counter

import pandas as pd


def near_key(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def main(train_path: str = "data/chats_train.csv", test_path: str = "data/chats_test.csv") -> None:
    train = pd.read_csv(train_path, dtype=str, keep_default_na=False)
    test = pd.read_csv(test_path, dtype=str, keep_default_na=False)
    for name, frame in (("train", train), ("test", test)):
        keys = frame["text"].map(near_key)
        dups = len(keys) - keys.nunique()
        words = frame["text"].str.split().str.len()
        print(f"{name}: {len(frame)} rows, {frame['intent'].nunique()} intents, "
              f"near-duplicates {dups} ({dups / len(frame):.2%}), words per message median {words.median():.0f}, "
              f"min {words.min()}, max {words.max()}")
        for head in ("sentiment", "emotion"):
            print(f"  {head}: {dict(Counter(frame[head]).most_common())}")
    overlap = set(train["text"].map(near_key)) & set(test["text"].map(near_key))
    print(f"test rows whose near-duplicate is in train: {len(overlap)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
