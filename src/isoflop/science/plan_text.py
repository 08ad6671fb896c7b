"""The text table of a budget plan (`isoflop plan` without --json)."""

from __future__ import annotations

from typing import Any


def _g(x: float | None, digits: int = 3) -> str:
    """7.03e9 style: compact for big numbers, plain for small ones."""
    if x is None:
        return "-"
    text = f"{x:.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}e{int(exponent)}"
    return text


def render_plan(out: dict[str, Any]) -> str:
    """The human-readable plan: a small table per section of `out` (the JSON object `isoflop plan --json`
    prints: the compute-optimal keys of `Plan.to_dict` with `law` from `describe_law`, and optionally `budget`,
    `intervals`, `inference_aware`, `data_constrained`, `overhead`, `shape` and `plot`)."""
    law = out["law"]
    lines = [f"law      {law['name']}"
             + (f"  (a = {law['a']:.4f}, b = {law['b']:.4f}; N counts {law['N']})" if "a" in law else
                f"  (N counts {law['N']})")]
    if "flops" in out:  # a plan for a budget (an inference-aware question alone has none)
        lines += _compute_optimal(out)
    if "inference_aware" in out:
        s = out["inference_aware"]
        lines += [f"\ninference-aware at loss {s['loss']:g} serving {_g(s['inference_tokens'])} tokens "
                  f"(Sardana et al. 2024)",
                  f"  {'':<16}{'ours':>12}{'Chinchilla':>12}",
                  f"  {'N (params)':<16}{_g(s['N']):>12}{_g(s['chinchilla_N']):>12}   {s['N_ratio']:.2%}",
                  f"  {'D (tokens)':<16}{_g(s['D']):>12}{_g(s['chinchilla_D']):>12}   {s['D_ratio']:.2%}",
                  f"  {'lifetime FLOPs':<16}{_g(s['lifetime_flops']):>12}{_g(s['chinchilla_lifetime_flops']):>12}"
                  f"   {s['flops_ratio']:.2%}"]
    if "data_constrained" in out:
        s = out["data_constrained"]
        lines += [f"\ndata-constrained with {_g(s['unique_tokens'])} unique tokens (Muennighoff et al. 2023)",
                  f"  N {_g(s['N'])} params, D {_g(s['D'])} tokens = {s['epochs']:.2f} epochs, effective data "
                  f"{_g(s['effective_tokens'])} ({s['effective_fraction']:.1%}), loss {s['loss']:.4f}",
                  f"  the unconstrained plan on repeated data would reach {s['chinchilla_loss_repeated']:.4f}"]
    if "overhead" in out:
        s = out["overhead"]
        lines += [f"\nsmaller and longer at loss {s['loss']:.4f} (de Vries 2023); below k_N = "
                  f"{s['k_N_min']:.3f} the loss is out of reach",
                  f"  {'k_N':>6}{'N':>10}{'k_D':>8}{'D':>10}{'D/N':>8}{'extra compute':>15}"]
        for r in s["rows"]:
            extra = "unreachable" if r["overhead"] is None else f"{100 * r['overhead']:+.1f}%"
            ratio = None if r["D"] is None else r["D"] / r["N"]
            lines.append(f"  {r['k_N']:>6g}{_g(r['N']):>10}{_g(r['k_D']):>8}{_g(r['D']):>10}{_g(ratio):>8}"
                         f"{extra:>15}")
    if "shape" in out:
        s = out["shape"]
        lines += [f"\nmodel shape for N_opt: d_model {s['d_model']}, n_layers {s['n_layers']}, n_heads "
                  f"{s['n_heads']} (head_dim {s['head_dim']}), ffn_hidden {s['ffn_hidden']}, vocab "
                  f"{s['vocab_size']}: {s['params']['total']:,} total params ({s['rel_error']:+.2%}), "
                  f"d_model/n_layers {s['aspect_ratio']:.0f}",
                  "  " + " ".join(f"--set {o}" for o in s["overrides"])]
    if "plot" in out:
        lines.append(f"\nplot -> {out['plot']}")
    return "\n".join(lines)


def _compute_optimal(out: dict[str, Any]) -> list[str]:
    budget = out.get("budget")
    lines = [f"budget   {_g(out['flops'])} FLOPs" + (
        f" = {_g(budget['gpu_hours'])} GPU-h x 3600 x {_g(budget['peak_flops'])} FLOP/s x MFU {budget['mfu']:g}"
        if budget else "")]
    iv = out.get("intervals")
    header = f"\n{'compute-optimal':<18}{'value':>12}"
    if iv:
        header += f"   {iv['level']:.0%} interval ({iv['method']}, {iv['n_draws']} draws)"
    lines.append(header)
    for key, label, digits in (("N_opt", "N_opt (params)", 3), ("D_opt", "D_opt (tokens)", 3),
                               ("tokens_per_param", "tokens/param", 3), ("loss", "loss", 4)):
        row = f"  {label:<16}{_g(out[key], digits):>12}"
        if iv:
            row += f"   {_g(iv[key][0], digits)} .. {_g(iv[key][1], digits)}"
        lines.append(row)
    if iv and "note" in iv:
        lines.append(f"  note: {iv['note']}")
    return lines
