"""The original project's model, as it wrapped Hugging Face GPT2Model (tests only)."""

import torch


def original_model(n_dims: int, n_positions: int, n_embd: int = 64, n_layer: int = 3, n_head: int = 2):
    from transformers import GPT2Config, GPT2Model

    class TransformerModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            cfg = GPT2Config(n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                             resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
            self._read_in = torch.nn.Linear(n_dims, n_embd)
            self._backbone = GPT2Model(cfg)
            self._read_out = torch.nn.Linear(n_embd, 1)

        def forward(self, X):
            h = self._backbone(inputs_embeds=self._read_in(X)).last_hidden_state
            return self._read_out(h)[:, -1, 0]

    return TransformerModel().eval()
