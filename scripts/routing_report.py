"""Routing figures on labelled data: share answered / clarified / escalated, accuracy of
what the bot answers, share of frustrated customers escalated.

Each row is routed as the first message of a new conversation with consent granted.

    nlu train data/chats_train.csv --out /tmp/m --force
    python scripts/routing_report.py /tmp/m data/chats_test.csv [--config nlu.toml] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys

from nlu.config import TrainConfig
from nlu.data import load_data
from nlu.errors import NLUError
from nlu.model import load_model
from nlu.routing import first_message_decisions, routing_summary
from nlu.service import policy_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("data", nargs="+")
    parser.add_argument("--config", help="nlu.toml whose [routing] section overrides the model's policy")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model_dir)
        policy = policy_for(model, args.config)
        frame = load_data(args.data).frame
    except NLUError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    texts = frame["text"].tolist()
    predictions = model.score_batch(texts)
    decisions = first_message_decisions(predictions, texts, policy)
    gold = frame["intent"].tolist() if "intent" in frame else None
    frustration_emotions = set(model.meta.get("config", {}).get("frustration_emotions", TrainConfig.frustration_emotions))
    frustrated = None
    if "emotion" in frame:
        frustrated = [e in frustration_emotions for e in frame["emotion"]]
    summary = routing_summary(decisions, [p.intent for p in predictions], gold, frustrated)
    summary["answer_threshold"] = policy.answer_threshold
    summary["frustration_threshold"] = policy.frustration_threshold
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    print(f"messages            {summary['n']}")
    print(f"thresholds          answer {policy.answer_threshold:.2f}, frustration {policy.frustration_threshold:.2f}")
    print(f"answered            {summary['answered']:.3f}")
    print(f"clarified           {summary['clarified']:.3f}")
    print(f"escalated           {summary['escalated']:.3f}")
    if "answered_accuracy" in summary:
        print(f"answered accuracy   {summary['answered_accuracy']:.3f} ({summary['answered_n']} rows)")
    if "frustrated_escalated" in summary:
        print(f"frustrated escalated {summary['frustrated_escalated']:.3f} ({summary['frustrated_n']} rows; "
              f"another {summary['frustrated_opted_out']:.3f} opted out)")
    print("reasons             " + ", ".join(f"{k} {v}" for k, v in summary["reasons"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
