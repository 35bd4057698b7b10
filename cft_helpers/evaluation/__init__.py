"""Evaluation: English Ability and Multilingual Ability as the paper measures them (SPEC.md 5)."""
