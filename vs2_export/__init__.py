"""vs2-export: CLIP + Visual Sparse Steering (VS2) as one ONNX graph, run torch-free, with parity.

The torch side (extract, train, calibrate, export, verify) lives in the top-level modules;
`vs2_export.runtime` is what apps import and needs only numpy, pillow and onnxruntime.
"""

__version__ = "0.1.0"
