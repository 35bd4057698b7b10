"""Two-phase continual instruction fine-tuning (CFT) helpers."""
