"""Configuration of the published networks: parse a user/config-file dict into typed settings.

Accepts plain keys (``nf``, ``ch_mult`` ...) or the published flat keys (``model.nf``,
``data.image_size`` ...; a nested ``{"model": {...}, "data": {...}}`` mapping is flattened first).
Structural options the re-implementation does not cover are refused with a :class:`UserError`
rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from medrecon.errors import UserError

# Sections of the published configs that hold no network hyper-parameters; ignored.
_IGNORED_SECTIONS = ("training.", "sampling.", "eval.", "optim.", "diffusion.", "seed", "device")
# Options without effect on the network's weights or inference output; ignored.
_IGNORED_COMMON = {"dropout", "init_scale", "name", "type", "use_fp16", "ema_rate", "var_type",
                   "beta_min", "beta_max", "dataset", "root", "random_flip",
                   "uniform_dequantization", "is_complex", "is_multi"}


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"nf": 8}} -> {"model.nf": 8}``; already-flat keys are kept."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _plain(d: Mapping[str, Any], fixed: Mapping[str, Any], names: set[str], what: str,
           ignored: set[str] = frozenset()) -> dict:
    """Strip ``model.``/``data.`` prefixes, check fixed options, keep constructor fields only."""
    out: dict[str, Any] = {}
    for key, value in flatten(d).items():
        short = key.split(".", 1)[1] if key.startswith(("model.", "data.")) else key
        if short in fixed:
            want = fixed[short]
            got = list(value) if isinstance(value, (list, tuple)) else value
            if got != want:
                raise UserError(f"{what} config: option {key}={value!r} is not supported "
                                f"(only {want!r}, as in the published network)")
            continue
        if short in names:
            if short in out and out[short] != value:
                raise UserError(f"{what} config: {short} given twice with different values")
            out[short] = value
        elif key.startswith(_IGNORED_SECTIONS) or short in _IGNORED_COMMON | set(ignored):
            continue
        else:
            raise UserError(f"{what} config: unknown option {key!r}")
    return out


# --------------------------------------------------------------------------------------------
# NCSN++ (score_sde / DiffusionMBIR)
# --------------------------------------------------------------------------------------------

NCSNPP_FIXED = {
    "resblock_type": "biggan", "fir": True, "skip_rescale": True, "conditional": True,
    "progressive": "none", "progressive_input": "residual", "progressive_combine": "sum",
    "embedding_type": "fourier", "normalization": "GroupNorm", "nonlinearity": "swish",
    "attention_type": "ddpm", "conv_size": 3, "resamp_with_conv": True,
}


@dataclass(frozen=True)
class NCSNppConfig:
    """Hyper-parameters of NCSN++ (BigGAN blocks, FIR resampling, residual input pyramid)."""

    image_size: int
    nf: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    num_channels: int = 1
    centered: bool = False          # False: the net maps [0, 1] input to [-1, 1] itself
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    fourier_scale: float = 16.0     # init scale of the Fourier frequencies (weights overwrite it)
    scale_by_sigma: bool = True
    sigma_min: float = 0.01
    sigma_max: float = 378.0
    num_scales: int = 2000

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NCSNppConfig":
        names = {f.name for f in fields(cls)}
        kw = _plain(d, NCSNPP_FIXED, names, "ncsnpp")
        missing = [n for n in ("image_size", "nf", "ch_mult", "num_res_blocks", "attn_resolutions")
                   if n not in kw]
        if missing:
            raise UserError(f"ncsnpp config: missing {', '.join(missing)}")
        for key in ("ch_mult", "attn_resolutions", "fir_kernel"):
            if key in kw:
                kw[key] = tuple(int(v) for v in kw[key])
        for key in ("image_size", "nf", "num_res_blocks", "num_channels", "num_scales"):
            if key in kw:
                kw[key] = int(kw[key])
        for key in ("fourier_scale", "sigma_min", "sigma_max"):
            if key in kw:
                kw[key] = float(kw[key])
        cfg = cls(**kw)
        if cfg.image_size % 2 ** (len(cfg.ch_mult) - 1):
            raise UserError(f"ncsnpp config: image_size {cfg.image_size} is not divisible by "
                            f"2**{len(cfg.ch_mult) - 1}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# --------------------------------------------------------------------------------------------
# ADM UNet (guided-diffusion / DDS)
# --------------------------------------------------------------------------------------------

ADM_FIXED = {
    "use_scale_shift_norm": True, "resblock_updown": True, "use_new_attention_order": False,
    "class_cond": False, "dims": 2, "use_checkpoint": False,
}

# guided-diffusion's default channel multipliers when channel_mult is empty (by image size).
ADM_DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4),
}


@dataclass(frozen=True)
class ADMConfig:
    """Resolved hyper-parameters of the ADM UNet (scale-shift norm, resblock up/down, legacy attention).

    ``attention_ds`` are downsample factors (image_size // attention pixel size); ``num_heads`` is
    used only when ``num_head_channels == -1``.
    """

    image_size: int
    in_channels: int
    model_channels: int
    out_channels: int
    num_res_blocks: int
    attention_ds: tuple[int, ...]
    channel_mult: tuple[float, ...]
    num_heads: int = 4
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    learn_sigma: bool = True

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ADMConfig":
        """Accept either resolved fields (as written to a model card) or the DDS YAML/create_model
        keys (``num_channels``, ``attention_resolutions`` as a comma string of pixel sizes,
        ``channel_mult`` as ``""`` or ``"1,1,2"``, ``learn_sigma``)."""
        flat = dict(flatten(d))
        aliases = {"num_channels": "model_channels", "attention_resolutions": None}
        names = {f.name for f in fields(cls)} | set(aliases)
        kw = _plain(flat, ADM_FIXED, names, "adm",
                    ignored={"resamp_with_conv", "conv_resample", "channels", "num_classes"})
        if "num_channels" in kw:
            kw.setdefault("model_channels", kw.pop("num_channels"))
        if "image_size" not in kw or "model_channels" not in kw or "num_res_blocks" not in kw:
            raise UserError("adm config: image_size, num_channels (model_channels) and "
                            "num_res_blocks are required")
        size = int(kw["image_size"])
        mult = kw.get("channel_mult", "")
        if isinstance(mult, str):
            if mult.strip() == "":
                if size not in ADM_DEFAULT_CHANNEL_MULT:
                    raise UserError(f"adm config: no default channel_mult for image_size {size}; "
                                    "give channel_mult")
                mult = ADM_DEFAULT_CHANNEL_MULT[size]
            else:
                mult = tuple(float(v) for v in mult.split(","))
        mult = tuple(int(m) if float(m).is_integer() else float(m) for m in mult)
        if "attention_resolutions" in kw:
            res = kw.pop("attention_resolutions")
            res = [int(v) for v in (res.split(",") if isinstance(res, str) else res) if str(v).strip()]
            ds = tuple(size // r for r in res)
            if "attention_ds" in kw and tuple(kw["attention_ds"]) != ds:
                raise UserError("adm config: attention_resolutions and attention_ds disagree")
            kw["attention_ds"] = ds
        kw.setdefault("attention_ds", ())
        in_ch = int(kw.get("in_channels", 1))
        learn_sigma = bool(kw.get("learn_sigma", True))
        out_ch = in_ch * 2 if learn_sigma else in_ch
        if "out_channels" in kw and int(kw["out_channels"]) != out_ch:
            raise UserError(f"adm config: out_channels={kw['out_channels']} contradicts "
                            f"in_channels={in_ch}, learn_sigma={learn_sigma} (expected {out_ch})")
        cfg = cls(image_size=size, in_channels=in_ch, model_channels=int(kw["model_channels"]),
                  out_channels=out_ch, num_res_blocks=int(kw["num_res_blocks"]),
                  attention_ds=tuple(int(v) for v in kw["attention_ds"]), channel_mult=mult,
                  num_heads=int(kw.get("num_heads", 4)),
                  num_head_channels=int(kw.get("num_head_channels", -1)),
                  num_heads_upsample=int(kw.get("num_heads_upsample", -1)),
                  learn_sigma=learn_sigma)
        if size % 2 ** (len(mult) - 1):
            raise UserError(f"adm config: image_size {size} is not divisible by 2**{len(mult) - 1}")
        return cfg

    def heads(self, channels: int, upsample: bool = False) -> int:
        """Number of attention heads at ``channels`` width."""
        if self.num_head_channels != -1:
            if channels % self.num_head_channels:
                raise UserError(f"adm config: {channels} channels not divisible by "
                                f"num_head_channels={self.num_head_channels}")
            return channels // self.num_head_channels
        if upsample and self.num_heads_upsample != -1:
            return self.num_heads_upsample
        return self.num_heads

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
