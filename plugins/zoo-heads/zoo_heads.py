"""zoo-heads: more classification heads for zoo.

* ``cosine``: logits are ``scale * cos(features, class weight)`` on the pooled features.
* ``attn-pool``: a learned query attends over the backbone's unpooled features (a CNN's
  feature-map positions or a ViT's tokens), then a linear classifier.

Both wrap the timm model in ``zoo.api.WithHead``. torch is imported inside the factories
only, so that ``zoo list`` stays fast.
"""

from __future__ import annotations

import functools

from zoo.api import UsageError, flag, hookimpl, number


@hookimpl
def zoo_register_heads(register):
    register("cosine", cosine_head,
             description="cosine classifier on the pooled features; options scale=16, learn_scale=false")
    register("attn-pool", attention_pool_head,
             description="a learned query attends over the unpooled features or tokens, then a linear layer; "
                         "options heads=auto, dropout=0.0")


def cosine_head(model, num_classes: int, scale: float = 16.0, learn_scale: bool = False):
    """The timm model without its classifier, then a cosine classifier."""
    from zoo.api import WithHead, feature_dim

    scale = number(scale, "head 'cosine': scale", positive=True)
    learn_scale = flag(learn_scale, "head 'cosine': learn_scale")
    model.reset_classifier(0)  # the timm model now returns pooled features
    return WithHead(model, _classes().CosineClassifier(feature_dim(model), int(num_classes), scale, learn_scale))


def attention_pool_head(model, num_classes: int, heads: int | str = "auto", dropout: float = 0.0):
    """The timm model returning unpooled features, then attention pooling and a linear layer."""
    from zoo.api import WithHead

    # MobileNetV3-style models apply their conv_head after the (now skipped) pooling: it widens the map.
    dim = model.head_hidden_size if hasattr(model, "conv_head") else model.num_features
    if heads == "auto":
        heads = next(h for h in (8, 4, 2, 1) if dim % h == 0)
    heads = number(heads, "head 'attn-pool': heads", whole=True)
    if heads < 1 or dim % heads:
        raise UsageError(f"head 'attn-pool': heads must be a positive divisor of the feature width {dim}, got {heads}")
    dropout = number(dropout, "head 'attn-pool': dropout", at_least=0, below=1)
    try:
        model.reset_classifier(0, global_pool="")  # no pooling: (B, C, H, W) from CNNs, (B, N, C) from ViTs
    except (TypeError, ValueError, AssertionError) as exc:
        raise UsageError(f"head 'attn-pool' needs a backbone that can return unpooled features; "
                         f"{type(model).__name__} cannot ({exc})") from None
    return WithHead(model, _classes().AttentionPool(dim, int(num_classes), heads, dropout))


@functools.cache
def _classes():
    """The head modules, defined on first use so that importing the plugin does not import torch."""
    import math
    from types import SimpleNamespace

    import torch
    from torch import nn
    from torch.nn import functional as F

    class CosineClassifier(nn.Module):
        """logits = scale * cos(features, class weights)."""

        def __init__(self, in_features: int, out_features: int, scale: float, learn_scale: bool):
            super().__init__()
            self.in_features, self.out_features = in_features, out_features  # WithHead reads out_features
            self.weight = nn.Parameter(torch.empty(out_features, in_features))
            nn.init.normal_(self.weight, std=0.01)
            # Stored as a log so that a learned scale stays positive.
            log_scale = torch.tensor(math.log(scale))
            if learn_scale:
                self.log_scale = nn.Parameter(log_scale)
            else:
                self.register_buffer("log_scale", log_scale)

        def forward(self, x):
            return self.log_scale.exp() * F.linear(F.normalize(x, dim=-1), F.normalize(self.weight, dim=-1))

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}"

    class AttentionPool(nn.Module):
        """One learned query attends over the tokens; the attended vector goes through a linear layer."""

        def __init__(self, dim: int, out_features: int, heads: int, dropout: float):
            super().__init__()
            self.dim, self.out_features = dim, out_features
            self.query = nn.Parameter(torch.empty(1, 1, dim))
            nn.init.trunc_normal_(self.query, std=0.02)
            self.norm = nn.LayerNorm(dim)
            self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
            self.fc = nn.Linear(dim, out_features)

        def tokens(self, x):
            """(B, N, dim) from a CNN's (B, dim, H, W) or (B, H, W, dim), or a ViT's (B, N, dim)."""
            if x.ndim == 4 and x.shape[1] == self.dim:
                return x.flatten(2).transpose(1, 2)
            if x.ndim == 4 and x.shape[-1] == self.dim:
                return x.flatten(1, 2)
            if x.ndim == 3 and x.shape[-1] == self.dim:
                return x
            raise RuntimeError(f"attn-pool expected features of width {self.dim}, got shape {tuple(x.shape)}")

        def forward(self, x):
            tokens = self.norm(self.tokens(x))
            pooled, _ = self.attn(self.query.expand(len(tokens), -1, -1), tokens, tokens, need_weights=False)
            return self.fc(pooled[:, 0])

    return SimpleNamespace(CosineClassifier=CosineClassifier, AttentionPool=AttentionPool)
