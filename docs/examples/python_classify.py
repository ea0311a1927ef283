"""Classify an image with an exported model in Python, torch-free (numpy, pillow, onnxruntime),
with and without steering, and with class names typed on the command line (run-time classes
through text.onnx; needs the [text] extra: ftfy, regex):

    python docs/examples/python_classify.py exported/NAME photo.jpg [class ...]
"""

import sys

from vs2_export.runtime import Vs2Session

folder, image, *classes = sys.argv[1:]
session = Vs2Session(folder)


def show(top):
    return ", ".join(f"{label} {100 * p:.1f}%" for label, p in top)


out = session.run_paths([image]).outputs  # every graph output, e.g. the gate's verdict
tau = session.manifest.steering.tau
print(f"steered: {'yes' if out['steered'][0] else 'no'} (fvu {out['fvu'][0]:.4f}, tau {tau:.4f})")
print(f"with steering: {show(session.classify(image, top_k=3)[0])}")
print(f"plain CLIP: {show(session.classify(image, top_k=3, lambda_=0.0)[0])}")  # lambda = 0
if classes:
    session.set_classes(classes)  # manifest templates, tokenizer, text.onnx
    print(f"{' or '.join(classes)}: {show(session.classify(image, top_k=3)[0])}")
