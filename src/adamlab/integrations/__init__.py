"""adamlab where users already train: ``adamlab.integrations.transformers`` for the Hugging Face Trainer."""
