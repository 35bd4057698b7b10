"""Evaluation: English Ability and Multilingual Ability as the paper measures them (docs/METHODS.md, "Evaluation: English and Multilingual Ability")."""
