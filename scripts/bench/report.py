"""The benchmark report (``benchmark.md``): one function per section, each the lines of its
table from the section's results."""
from __future__ import annotations

from pathlib import Path


def fmt(r: dict) -> str:
    return f"{r['median']:.2f} [{r['q25']:.2f}, {r['q75']:.2f}]"


def mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f}"


def write_report(results: dict, args, out_dir: Path) -> Path:
    env = results["environment"]
    intro = ["# Benchmarks", "",
             f"`{env['command']}` — {env['device']}, torch {env['torch']}, "
             f"{env['threads']} threads, {env['cpus']} CPUs, {env['date']}.", "",
             f"Ratios: median of {args.reps} interleaved repetitions, [interquartile range] "
             "of the per-repetition ratios. Memory: peak tensor memory of the call "
             f"({env['memory_method']}; see the script's docstring).", ""]
    headline: list[str] = []
    lines: list[str] = []
    if results.get("treatment"):
        lines += section_treatment(results["treatment"], args)
    if results.get("depth"):
        lines += section_depth(results["depth"], args)
    if results.get("diagnosis"):
        lines += section_diagnosis(results["diagnosis"], args)
    if results.get("memory"):
        lines += section_memory(results["memory"], args)
    if results.get("loader"):
        lines += section_loader(results["loader"], args)
    if results.get("data_paths"):
        lines += section_data_paths(results["data_paths"], args)
    if results.get("released"):
        headline, more = section_released(results["released"], args)
        lines += more
    if results.get("quickstart"):
        lines += section_quickstart(results["quickstart"], args)
    path = out_dir / "benchmark.md"
    path.write_text("\n".join(intro + headline + lines))
    return path


def section_treatment(t: dict, args) -> list[str]:
    lines: list[str] = []
    lines += ["## Treatment step ÷ plain training step", "",
              f"Batch {args.batch_size}, {args.image_size} px, {args.in_channels} channels; "
              f"channel + spatial constraint on the last conv (alpha {args.alpha}, "
              f"beta {args.beta}, masks given); forward, CE, constraint, backward, SGD step "
              "through `train.train_one_epoch`.", "",
              "| model | layer | feature [K, H, W] | plain step ms | treatment ÷ plain | "
              f"J={args.noise_draws}, δ={args.noise_delta:g} ÷ plain | "
              "memory treatment ÷ plain |",
              "|---|---|---|---|---|---|---|"]
    for name, r in t.items():
        lines.append(f"| {name} | `{r['layer']}` | {r['feature']} | {r['plain_ms']:.1f} | "
                     f"{fmt(r['treat'])} | {fmt(r['treat_noisy'])} | "
                     f"{r['memory_ratio']:.2f} |")
    lines.append("")
    return lines


def section_depth(d: dict, args) -> list[str]:
    lines: list[str] = []
    lines += ["## Treatment ÷ plain vs constrained layer", "",
              "| model | layer (from last) | module | feature [K, H, W] | treatment ÷ plain |",
              "|---|---|---|---|---|"]
    for name, r in d.items():
        for layer, lr in r["layers"].items():
            lines.append(f"| {name} | {layer} | `{lr['name']}` | {lr['feature']} | "
                         f"{fmt(lr['treat'])} |")
    lines.append("")
    return lines


def section_diagnosis(g: dict, args) -> list[str]:
    lines: list[str] = []
    lines += ["## Diagnosis with J noise draws ÷ noiseless diagnosis", "",
              f"`compute_statistics` on {g['images']} images ({args.image_size} px), "
              f"{g['model']} layer `{g['layer']}`, batch {g['batch_size']}, |·| "
              f"(noiseless: {g['base_s']:.2f} s). Memory: one batch.", "",
              "| setting | time ÷ noiseless | memory ÷ noiseless |", "|---|---|---|"]
    for k, r in g["ratios"].items():
        lines.append(f"| {k} | {fmt(r['time'])} | {r['memory']:.2f} |")
    lines.append("")
    return lines


def section_memory(m: dict, args) -> list[str]:
    lines: list[str] = []
    n0, n1 = m["images"]
    lines += ["## Diagnosis memory vs number of images", "",
              f"{m['model']} layer `{m['layer']}`, J={m['noise_draws']}, "
              f"batch {m['batch_size']}, synthetic images made batch by batch.", "",
              "| images | peak MiB |", "|---|---|"]
    lines += [f"| {n} | {mib(p)} |" for n, p in m["peaks"].items()]
    lines += ["", f"Peak at {n1} ÷ peak at {n0} images: **{m['ratio']:.2f}** "
              f"(target ≤ 1.2: {'met' if m['ratio'] <= 1.2 else 'NOT met'}).", ""]
    return lines


def section_loader(lo: dict, args) -> list[str]:
    lines: list[str] = []
    lines += ["## Loader throughput ÷ training throughput", ""]
    if "skipped" in lo:
        lines += [f"Skipped: {lo['skipped']}", ""]
    else:
        r = lo["ratio"]
        lines += [f"`build_dataset({lo['data']!r}, train transform)` + `make_loader` "
                  f"({lo['workers']} workers, batch {lo['batch_size']}, "
                  f"{lo['images']['loader']} images per pass) vs training steps of "
                  f"{lo['model']} (the fastest model measured) at the same batch size.", "",
                  "| loader images/s | training images/s | loader ÷ training |",
                  "|---|---|---|",
                  f"| {lo['loader_images_per_s']:.0f} | {lo['train_images_per_s']:.0f} | "
                  f"{fmt(r)} |", "",
                  f"Goal: loading ≥ 5× faster than training: "
                  f"{'met' if r['median'] >= 5 else 'NOT met'}.", ""]
    return lines


def section_data_paths(dp: dict, args) -> list[str]:
    lines: list[str] = []
    lines += ["## In-memory data path vs per-image path vs training", "",
              "Loader passes over synthetic folders (`loaders.make_loader`, no workers, "
              "shuffled, the whole training augmentation: crop with padding 4, horizontal "
              "flip, normalisation) and `smallcnn` training steps (forward, backward, SGD "
              "step) at the same batch, interleaved in one process. In-memory: "
              "`--data_mode memory` (decoded once, whole-batch augmentation); per-image: "
              "`--data_mode folder`.", "",
              "| data | batch | in-memory images/s | per-image images/s | smallcnn training "
              "images/s | in-memory ÷ training | per-image ÷ training | in-memory ÷ "
              "per-image | first decode s | cache load s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in dp.items():
        lines.append(f"| {name} ({r['size']} px, {r['channels']} ch) | {r['batch_size']} | "
                     f"{r['memory_images_per_s']:.0f} | {r['folder_images_per_s']:.0f} | "
                     f"{r['train_images_per_s']:.0f} | {fmt(r['memory_vs_train'])} | "
                     f"{fmt(r['folder_vs_train'])} | {fmt(r['memory_vs_folder'])} | "
                     f"{r['decode_s']:.2f} | {r['cache_load_s']:.2f} |")
    met = all(r["memory_vs_train"]["median"] >= 5 for r in dp.values())
    lines += ["", f"Goal: in-memory loading ≥ 5× smallcnn's training: "
              f"{'met' if met else 'NOT met'}.", ""]
    return lines


def section_released(rel: dict, args) -> tuple[list[str], list[str]]:
    """The headline lines and the section's lines."""
    lines: list[str] = []
    c = rel["checks"]
    s, lc = c["statistics"], c["losses"]
    dg, tr = rel["diagnosis"], rel["treatment"]
    headline = [
        f"- **Diagnosis: {dg['speedup']['median']:.1f}× faster, "
        f"{dg['memory_ratio']:.1f}× less memory** than the released implementation "
        f"({rel['model']}, {rel['images']} images, {rel['layers']} layers).",
        f"- **Treatment step: {tr['speedup']['median']:.2f}× faster, "
        f"{tr['memory_ratio']:.2f}× less memory** than the released implementation "
        f"({rel['model']}, batch {rel['treat_batch_size']}, last conv).", ""]
    lines += ["## Released implementation ÷ ours", "",
              "`scripts/released_reference.py` re-implements the released computation "
              "(every conv layer, per-image maps kept, one gradient call per layer with "
              "`create_graph=True`, per-sample Python loops; treatment with three "
              "gradient calls). Ours: `compute_statistics(J=1, δ=0, relu)` on the same "
              "layers, `DoctorLoss(relu, second_term=mask)` at the released scale.", "",
              "| | released ÷ ours time | released ÷ ours memory | released MiB | ours MiB |",
              "|---|---|---|---|---|",
              f"| diagnosis ({rel['images']} images, {rel['layers']} layers) | "
              f"{fmt(dg['speedup'])} | {dg['memory_ratio']:.2f} | "
              f"{mib(dg['memory']['released'])} | {mib(dg['memory']['ours'])} |",
              f"| treatment step (batch {rel['treat_batch_size']}) | {fmt(tr['speedup'])} | "
              f"{tr['memory_ratio']:.2f} | {mib(tr['memory']['released'])} | "
              f"{mib(tr['memory']['ours'])} |", ""]
    if "released_host" in dg["memory"]:
        lines += [f"Host memory of the diagnosis (the release keeps its maps there): "
                  f"released {mib(dg['memory']['released_host'])} MiB, ours "
                  f"{mib(dg['memory']['ours_host'])} MiB.", ""]
    lines += ["Checks (same model, same images):", "",
              f"- statistics: {'PASS' if s['ok'] else 'FAIL' if s['ok'] is False else 'n/a'}"
              + (f" — released sums × B vs ours: max rel. error {s['sum_rel_err']:.1e}; "
                 f"normalised: max abs. difference {s['normalized_abs_err']:.1e}; masks: "
                 f"{s['mask_mismatches']} mismatches ({s['mask_borderline']} within 1e-3 "
                 f"of θ) over {s['layers']} layers" if "sum_rel_err" in s else ""),
              f"- losses: {'PASS' if lc['ok'] else 'FAIL'} — channel ours "
              f"{lc['channel_ours']:.6g} vs released × B {lc['channel_released_x_B']:.6g}; "
              f"spatial ours {lc['spatial_ours']:.6g} vs released "
              f"{lc['spatial_released']:.6g} (area resize)", ""]
    return headline, lines


def section_quickstart(q: dict, args) -> list[str]:
    lines: list[str] = []
    lines += ["## Quickstart", "",
              f"`fast=0 bash scripts/quickstart.sh`: {q['seconds']:.0f} s "
              f"(exit code {q['returncode']}).", ""]
    return lines
