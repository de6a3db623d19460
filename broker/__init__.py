"""The contract and the backbone: models, codec, subjects, settings, errors, JetStream bus and the stores."""
