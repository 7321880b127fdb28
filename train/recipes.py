"""The training recipes: model names, optimizers and each model's defaults.

Kept free of Keras so `digitserve train --help` lists them without importing TensorFlow.
"""

from __future__ import annotations

MODELS = ("softmax", "mlp", "cnn", "compact")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")

# softmax is the tutorial's recipe: Dense(10) + softmax, plain SGD, batch 32, 20 epochs, no
# tricks. The tutorial fixes no learning rate: Keras' default 0.01 lands at 91.98% on every seed,
# just under the tutorial's 92-93%; 0.05 lands in the middle of it (92.3-92.5%).
# cnn keeps a validation split for its learning curves but no early stopping: under its
# cosine schedule the last epochs are the best, while validation loss is noisy early on.
MODEL_DEFAULTS: dict[str, dict[str, object]] = {
    "softmax": dict(epochs=20, batch_size=32, optimizer="sgd", learning_rate=0.05,
                    validation_split=0.0, augment=False, patience=0),
    "mlp": dict(epochs=20, batch_size=128, optimizer="adam", learning_rate=1e-3,
                validation_split=0.1, augment=False, patience=4),
    "cnn": dict(epochs=15, batch_size=128, optimizer="adam", learning_rate=3e-3,
                validation_split=0.05, augment=True, patience=0),
    "compact": dict(epochs=15, batch_size=128, optimizer="adam", learning_rate=3e-3,
                    validation_split=0.05, augment=True, patience=0),
}


def defaults_text(key: str) -> str:
    """`key`'s default for each model, in MODELS order, as --help shows it: "20 / 20 / 15"."""

    def shown(value: object) -> str:
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    return " / ".join(shown(MODEL_DEFAULTS[model][key]) for model in MODELS)
