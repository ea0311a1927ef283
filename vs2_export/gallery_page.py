"""gallery.json's data -> one static HTML page (no script, no network; images are files beside
it). Every text from data is escaped: class names and file names come from users."""

from __future__ import annotations

from html import escape

CSS = """
:root { color-scheme: light; --ink: #1d2330; --soft: #5b6475; --line: #dde2ea; --bg: #f6f7f9;
        --up: #17803d; --down: #b42318; --accent: #2953c7; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: var(--ink); background: var(--bg); }
main { max-width: 1180px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 32px 0 6px; }
.lead { color: var(--soft); margin: 0 0 12px; max-width: 900px; }
.facts { display: flex; flex-wrap: wrap; gap: 8px 20px; padding: 12px 16px; background: #fff;
         border: 1px solid var(--line); border-radius: 10px; }
.facts b { font-weight: 600; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(540px, 1fr)); gap: 16px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px 16px; }
.card h3 { margin: 0 0 4px; font-size: 17px; }
.meta { color: var(--soft); font-size: 13.5px; margin: 0 0 8px; }
.chips { display: flex; flex-wrap: wrap; gap: 6px; margin: 4px 0 10px; }
.chip { background: #eef2fb; color: #1f3f99; border-radius: 999px; padding: 1px 10px;
        font-size: 13.5px; white-space: nowrap; }
.thumbs { display: flex; flex-wrap: wrap; gap: 8px; }
figure { margin: 0; text-align: center; font-size: 12.5px; color: var(--soft); }
figure img, .row img { display: block; border-radius: 6px; border: 1px solid var(--line);
                       image-rendering: pixelated; }
.rows { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 12px; }
.row { display: flex; gap: 12px; background: #fff; border: 1px solid var(--line);
       border-radius: 10px; padding: 10px 12px; }
.row .text { min-width: 0; font-size: 14px; }
.row .file { color: var(--soft); font-size: 12.5px; overflow-wrap: anywhere; }
.pred { margin: 2px 0; } .arrow { color: var(--soft); padding: 0 4px; }
.ok { color: var(--up); font-weight: 600; } .bad { color: var(--down); font-weight: 600; }
.gate { font-size: 13px; color: var(--soft); }
ul.moved { margin: 4px 0 0; padding-left: 18px; font-size: 13.5px; }
ul.moved li { white-space: nowrap; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.up { color: var(--up); } .down { color: var(--down); }
"""


def render_page(data: dict) -> str:
    """The whole page."""
    body = [_header(data), _latents(data), _images(data)]
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>VS2 latents: {escape(data['model'])}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


def _header(data: dict) -> str:
    gate = data["gate"]
    skipped = f"<span>{len(data['skipped'])} files skipped (see gallery.json)</span>" \
        if data["skipped"] else ""
    return (f"<h1>What VS2 steers with: {escape(data['model'])}</h1>"
            '<p class="lead">VS2 replaces each image\'s CLS token h by h moved along the '
            "decoder directions of its own active SAE latents. Below: the latents used most on "
            "these images, the images that activate them most, the class prompts each "
            "direction points to, and for single images the latents whose steering moved the "
            "logits most (the steered logits minus the logits with that one latent left out).</p>"
            f'<div class="facts"><span><b>{data["n_images"]}</b> images from '
            f"<code>{escape(data['images'])}</code></span><span>SAE: <b>{data['sae']['n']}</b> "
            f"latents, k = <b>{data['sae']['k']}</b></span><span>gate <code>"
            f"{escape(gate['criterion'])}</code> &le; &tau; = {gate['tau']:.4g}: "
            f"<b>{100 * data['steered_fraction']:.1f}%</b> steered</span>{skipped}</div>")


def _img(data: dict, image: int, size: int = 96, alt: str = "") -> str:
    src = data["files"][str(image)]
    return (f'<img src="{escape(src)}" width="{size}" height="{size}" loading="lazy" '
            f'alt="{escape(alt)}">')


def _latents(data: dict) -> str:
    cards = []
    for row in data["latents"]:
        prompts = "".join(f'<span class="chip">{escape(c)} {cos:+.2f}</span>'
                          for c, cos in row["prompts"]) or '<span class="meta">no classes</span>'
        thumbs = "".join(f"<figure>{_img(data, t['image'], alt='image ' + str(t['image']))}"
                         f"{t['value']:.2f}</figure>" for t in row["top"])
        cards.append(
            f'<section class="card" id="latent-{row["id"]}"><h3>Latent {row["id"]}</h3>'
            f'<p class="meta">active in {100 * row["usage"]:.1f}% of the images &middot; mean '
            f'value {row["mean_value"]:.2f} when active</p>'
            f'<div class="chips">{prompts}</div><div class="thumbs">{thumbs}</div></section>')
    return (f"<h2>The {len(data['latents'])} most used latents</h2><p class=\"lead\">Blue chips: "
            "the class prompts nearest to the latent's decoder direction (added at the training "
            "mean, through ln_post and the projection; cosine). Images: the ones that activate "
            "it most, with the latent's value.</p>"
            f'<div class="grid">{"".join(cards)}</div>')


def _pred(top, label: str | None) -> str:
    if top is None:
        return "&mdash;"
    name, p = top
    mark = "" if label is None else (' class="ok"' if name == label else ' class="bad"')
    return f"<span{mark}>{escape(name)}</span> {100 * p:.0f}%"


def _images(data: dict) -> str:
    shown = {row["id"] for row in data["latents"]}
    rows = []
    for r in data["shown"]:
        moved = "".join(
            f"<li>{_latent_link(m['latent'], shown)} pushed <b>{escape(m['pushed'])}</b> "
            f'<span class="{_sign(m["pushed_by"])}">{m["pushed_by"]:+.2f}</span> &middot; '
            "VS2's answer "
            f'<span class="{_sign(m["on_prediction"])}">'
            f"{m['on_prediction']:+.2f}</span></li>" for m in r["moved_by"])
        gate = ("steered" if r["steered"] else "gate closed: plain CLIP") + \
            f" ({escape(data['gate']['criterion'])} {r['score']:.4g})"
        label = f"label <b>{escape(r['label'])}</b> &middot; " if r["label"] else ""
        rows.append(
            f'<div class="row">{_img(data, r["image"], alt=r["path"])}<div class="text">'
            f'<div class="file">{label}{escape(r["path"])}</div><div class="pred">zero-shot '
            f'{_pred(r["zero_shot"], r["label"])}<span class="arrow">&rarr;</span>VS2 '
            f'{_pred(r["vs2"], r["label"])}</div><div class="gate">{gate}</div>'
            f'{f"<ul class=moved>{moved}</ul>" if moved else ""}</div></div>')
    return ("<h2>Images: which latents moved the logits</h2><p class=\"lead\">Images whose "
            "prediction steering changed come first (green: the label, red: not the label). Per "
            "image, its three latents that moved the logits most: the class each pushed up most, "
            "and what it did to the logit of VS2's answer.</p>"
            f'<div class="rows">{"".join(rows)}</div>')


def _sign(value: float) -> str:
    return "up" if value >= 0 else "down"


def _latent_link(latent: int, shown: set[int]) -> str:
    text = f"latent {latent}"
    return f'<a href="#latent-{latent}">{text}</a>' if latent in shown else text
