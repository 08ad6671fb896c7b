"""Parameter groups and FLOPs per token, from the config alone (pure Python: no torch, no model).

Parameter groups
    embedding      the token embedding (V*D) plus the output head when untied (V*D): every vocab-sized matrix
    non_embedding  everything else: attention, FFN, norms (Kaplan et al. 2020's N)
    total          embedding + non_embedding (Hoffmann et al. 2022's N)
    active         parameters a token passes through (equal to total for a dense model; MoE counts only the
                   experts a token is routed to)

FLOPs convention (PaLM, Chowdhery et al. 2022, App. B; Kaplan et al. 2020, Table 1)
    A matmul of an (m, k) by a (k, n) matrix costs 2*m*k*n FLOPs; the backward pass costs twice the forward.
    Per token, forward:
        matmuls   2 * (matmul parameters): q, k, v, o, FFN projections and the output head; not the embedding
                  lookup (a gather) nor norms (elementwise)
        attention 2 * 2 * n_layers * seq_len * n_heads * head_dim: scores (Q K^T) and the weighted sum (A V)
                  over the full T x T square, as the kernels compute and torch.utils.flop_counter counts them;
                  causal masking makes half of it useless work but not free. Window layers (model.layout)
                  count the same square: SDPA with a boolean mask computes it all. ReRoPE layers (two-pass,
                  nn/rerope.py) compute the scores twice: 3 * 2 * seq_len * n_heads * head_dim.
    Training (forward + backward) = 3 * forward, i.e. 6*N_matmul + 12*L*T*D_attn per token, less one matmul
    per MoD predictor: its input is detached (stop-gradient), so its first layer's backward has no input
    gradient (2 * D * D/2 FLOPs fewer per token).
    Elementwise work (norms, activations, softmax, RoPE) is ignored: under 1 % at these shapes.

Every variant counts itself: the FFN kind its (total, active) parameters per block, the MoD kind its router
and predictor, the share of tokens a block processes and its detached matmuls, the tied_init kind its head
projection, and each layer's attention (ModelConfig.attention_layers()) its number of score passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isoflop.nn.config import ModelConfig


@dataclass(frozen=True)
class ParamGroups:
    total: int
    embedding: int
    non_embedding: int
    active: int
    attention: int
    ffn: int
    """FFN slots, MoE routers and shared experts included."""
    norms: int
    mod_routers: int = 0
    """Mixture-of-Depths routers and predictors."""
    head_projection: int = 0
    """The D x D projection before a tied head (model.tied_init = "projection")."""

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class FlopsPerToken:
    forward: int
    """Forward FLOPs per token at the given sequence length."""
    training: int
    """Forward + backward FLOPs per token (3 * forward, less the MoD predictors' missing input gradient)."""
    matmul_params: int
    """Parameters used in matmuls by one token (the 'N' of 6N)."""
    attention_forward: int
    """The sequence-length-dependent part of `forward`."""
    seq_len: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def attention_params(cfg: ModelConfig) -> int:
    """q and o are D x D; k and v are D x (K*H) for K key/value heads."""
    return 2 * cfg.d_model * cfg.d_model + 2 * cfg.d_model * cfg.kv_heads * cfg.head_dim


def param_groups(cfg: ModelConfig) -> ParamGroups:
    vocab_matrix = cfg.vocab_size * cfg.d_model
    embedding = vocab_matrix if cfg.tie_embeddings else 2 * vocab_matrix
    attention = cfg.n_layers * attention_params(cfg)
    ffn_total = ffn_active = routers = 0
    for layer in range(cfg.n_layers):
        total, active = cfg.ffn.params(cfg.d_model, cfg.ffn_hidden_size, layer)
        ffn_total, ffn_active = ffn_total + total, ffn_active + active
        routers += cfg.mod.router_params(cfg.d_model, layer)
    norms = (2 * cfg.n_layers + 1) * cfg.d_model
    head_projection = cfg.tied_init.params(cfg.d_model)
    non_embedding = attention + ffn_total + norms + routers + head_projection
    total = embedding + non_embedding
    active = total - (ffn_total - ffn_active)
    return ParamGroups(total=total, embedding=embedding, non_embedding=non_embedding, active=active,
                       attention=attention, ffn=ffn_total, norms=norms, mod_routers=routers,
                       head_projection=head_projection)


def flops_per_token(cfg: ModelConfig, seq_len: int) -> FlopsPerToken:
    """FLOPs one token costs at context length `seq_len`, by the convention in the module docstring.

    A MoD-routed block processes k = floor(capacity * T) of the T tokens: its matmuls cost k/T per token on
    average and its attention square is k x k, i.e. (k/T)^2 of the dense square; its router and predictor see
    every token. A layer with p score passes does (p + 1) / 2 of plain attention's square work (p score
    matrices and one weighted sum)."""
    head = cfg.vocab_size * cfg.d_model + cfg.tied_init.params(cfg.d_model)
    matmul = float(head)
    attention_forward = 0.0
    per_square = 4 * seq_len * cfg.n_heads * cfg.head_dim  # one layer's T x T attention, per token
    for layer, spec in enumerate(cfg.attention_layers()):
        block = attention_params(cfg) + cfg.ffn.params(cfg.d_model, cfg.ffn_hidden_size, layer)[1]
        share = cfg.mod.token_share(layer, seq_len)
        matmul += share * block + cfg.mod.router_params(cfg.d_model, layer)
        attention_forward += share * share * per_square * ((spec.score_passes + 1) / 2)
    matmul_params, attention_forward = round(matmul), round(attention_forward)
    forward = 2 * matmul_params + attention_forward
    detached = sum(cfg.mod.detached_input_params(cfg.d_model, layer) for layer in range(cfg.n_layers))
    return FlopsPerToken(forward=forward, training=3 * forward - 2 * detached, matmul_params=matmul_params,
                         attention_forward=attention_forward, seq_len=seq_len)
