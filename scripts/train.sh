#!/usr/bin/env bash
# Train (or evaluate) with Hydra overrides: ./scripts/train.sh model=resnet18 optim=sgd trainer.max_epochs=5
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
exec "$VENV/bin/python" -m trainer "$@"
