"""The embedded default model "vs2-demo" (a tiny open_clip CLIP) and the generator of its data.

Files shipped here: vs2-demo.safetensors (fp16 state_dict), vs2-demo.json (model config,
preprocessing, classes, templates, training record) and classes.txt.
"""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
DEMO_NAME = "vs2-demo"
