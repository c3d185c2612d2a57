"""The original project's data pipeline, reproduced for benchmarking: one
scikit-learn model per sequence and per candidate, fitted in a Python loop.

It is a yardstick, not a code path of SelectLens: its numbers define what
"the original speed" means on the machine the benchmark runs on.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from selectlens.config import DataConfig


def reference_sequences(data: DataConfig, n_sequences: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Generate ``n_sequences`` the original way; returns tokens ``[B, N, K+1]``, target, alpha."""
    from sklearn.linear_model import LogisticRegression, Ridge

    rng = np.random.default_rng(seed)
    alphas, cands = data.data_alphas, data.candidates
    per_alpha = max(1, n_sequences // len(alphas))
    tokens, targets, labels = [], [], []
    for a in alphas:
        for _ in range(per_alpha):
            x_train = rng.standard_normal((data.N, data.d_d))
            x_test = rng.standard_normal((data.N, data.d_d))
            w = rng.standard_normal(data.d_d)
            if data.classification:
                p_train = 1 / (1 + np.exp(-data.data_gen_factor * a * (x_train @ w)))
                p_test = 1 / (1 + np.exp(-data.data_gen_factor * a * (x_test @ w)))
                y_train = (rng.random(data.N) < p_train).astype(float)
                y_test = (rng.random(data.N) < p_test).astype(float)
                if y_train.min() == y_train.max():  # sklearn needs both classes
                    y_train[0] = 1 - y_train[0]
                preds = []
                for c in cands:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        model = LogisticRegression(C=c).fit(x_train, y_train)
                    preds.append(model.predict_proba(x_test)[:, 1])
            else:
                y_train = x_train @ w + rng.standard_normal(data.N) * data.noise_scale * a
                y_test = x_test @ w + rng.standard_normal(data.N) * data.noise_scale * a
                preds = [Ridge(alpha=b).fit(x_train, y_train).predict(x_test) for b in cands]
            tok = np.concatenate([np.stack(preds, axis=1), y_test[:, None]], axis=1)
            target = tok[-1, -1]
            tok[-1, -1] = 0.0
            tokens.append(tok)
            targets.append(target)
            labels.append(a)
    order = rng.permutation(len(tokens))
    return {
        "tokens": torch.tensor(np.stack(tokens)[order], dtype=torch.float32),
        "target": torch.tensor(np.array(targets)[order], dtype=torch.float32),
        "alpha": torch.tensor(np.array(labels)[order], dtype=torch.float32),
    }


def original_model(n_dims: int, n_positions: int, n_embd: int = 64, n_layer: int = 3, n_head: int = 2) -> torch.nn.Module:
    """The original project's model: Hugging Face ``GPT2Model`` (with its full 50257-row token table)
    between a linear read-in and read-out. Needs ``transformers`` (``pip install 'selectlens[hf]'``)."""
    try:
        from transformers import GPT2Config, GPT2Model
    except ImportError:
        from selectlens.errors import InputError

        raise InputError("this needs Hugging Face transformers: pip install 'selectlens[hf]'") from None

    class TransformerModel(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            cfg = GPT2Config(n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
            self._read_in = torch.nn.Linear(n_dims, n_embd)
            self._backbone = GPT2Model(cfg)
            self._read_out = torch.nn.Linear(n_embd, 1)

        def forward(self, X: torch.Tensor) -> torch.Tensor:
            h = self._backbone(inputs_embeds=self._read_in(X)).last_hidden_state
            return self._read_out(h)[:, -1, 0]

    return TransformerModel()
