"""OpenVINO behind the slice of ONNX Runtime's InferenceSession surface that the runtime uses.

Why the `openvino` package and not ONNX Runtime's OpenVINO execution provider: the EP ships as
its own wheel, onnxruntime-openvino (1.24.1 on PyPI when measured, against onnxruntime 1.31.1
here), which installs the same `onnxruntime` module as onnxruntime / onnxruntime-gpu, so the two
cannot live in one environment (the ORT #26996 trap, docs/design.md). The openvino wheel
(2026.4.1, 180 MB installed) sits beside any ONNX Runtime build, reads the same model.onnx, and
keeps our metadata (rt_info['framework']['vs2_export']). This adapter gives it the same run()
contract, so Vs2Session, verify and bench treat it as one more provider.

Two things OpenVINO does differently, handled here:
- Graph inputs that also have an initializer (steer_gamma, steer_lambda, gate_tau) become
  constants when OpenVINO reads the ONNX file (measured: only pixel_values is an input). They are
  turned back into parameters, fed their default unless the caller overrides them.
- Compute precision is a compile hint, not a file: INFERENCE_PRECISION_HINT 'f32' for fp32 and
  int8 files (the CPU plugin defaults to bf16 where the CPU has it, docs/design.md pitfalls),
  'bf16' for the bf16 precision, which runs model.onnx. A CPU without bf16 support silently
  compiles f32 (measured on this AVX2-only EPYC): that is refused, never reported as bf16.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import contract

DEVICE = "CPU"
HINTS = {"fp32": "f32", "int8": "f32", "bf16": "bf16"}
"""Precision -> INFERENCE_PRECISION_HINT. int8: QDQ nodes run as int8; the rest stays f32."""
_ORT_TYPES = {"f32": "tensor(float)", "u8": "tensor(uint8)", "i64": "tensor(int64)",
              "boolean": "tensor(bool)", "f16": "tensor(float16)", "i32": "tensor(int32)"}


class OpenVinoError(ValueError):
    """OpenVINO is missing, or cannot run the asked precision on this CPU."""


@dataclass(frozen=True)
class NodeArg:
    """What ORT's NodeArg offers and the runtime reads: name, type string, shape."""

    name: str
    type: str
    shape: list


@dataclass(frozen=True)
class ModelMeta:
    custom_metadata_map: dict


def available() -> bool:
    """Whether the openvino package imports."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_precisions() -> list[str]:
    """What the CPU plugin can compute in, by our names: ['fp32', 'int8'] plus 'bf16' where the
    CPU has it (OPTIMIZATION_CAPABILITIES lists BF16 only with AVX512_BF16 or AMX)."""
    import openvino as ov
    caps = set(ov.Core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))
    return ["fp32", "int8"] + (["bf16"] if "BF16" in caps else [])


class OpenVinoSession:
    """One compiled model on OpenVINO's CPU plugin, used like an ort.InferenceSession."""

    def __init__(self, path: Path, precision: str = "fp32", threads: int | None = None):
        try:
            import openvino as ov
        except ImportError:
            raise OpenVinoError("provider openvino: expected the openvino package, got none "
                                "(pip install 'vs2-export[openvino]')") from None
        if precision not in HINTS:
            raise OpenVinoError(f"provider openvino: expected precision in {sorted(HINTS)}, "
                                f"got {precision!r} (fp16 is a CUDA variant)")
        core = ov.Core()
        model = core.read_model(str(path))
        self._meta = _metadata(model)
        model, self._defaults = _lift_overridable(model, ov)
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        self._compiled = core.compile_model(model, DEVICE, config)
        hint = self._compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type
        got = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        if got != HINTS[precision]:
            raise OpenVinoError(f"provider openvino: expected to compute in {precision}, but this "
                                f"CPU compiles {got} (OPTIMIZATION_CAPABILITIES "
                                f"{core.get_property(DEVICE, 'OPTIMIZATION_CAPABILITIES')}): "
                                "bf16 needs AVX512_BF16 or AMX")
        self._request = self._compiled.create_infer_request()
        self._outputs = {o.get_any_name(): o for o in self._compiled.outputs}

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """ORT's contract: outputs in the order asked (None = all), feeds by input name."""
        inputs = {**self._defaults, **feeds}
        result = self._request.infer(inputs)
        names = output_names or list(self._outputs)
        # copies: the request reuses its output buffers on the next call
        return [np.array(result[self._outputs[n]], copy=True) for n in names]

    def get_inputs(self) -> list[NodeArg]:
        return [_arg(i) for i in self._compiled.inputs if i.get_any_name() not in self._defaults]

    def get_overridable_initializers(self) -> list[NodeArg]:
        return [_arg(i) for i in self._compiled.inputs if i.get_any_name() in self._defaults]

    def get_outputs(self) -> list[NodeArg]:
        return [_arg(o) for o in self._compiled.outputs]

    def get_modelmeta(self) -> ModelMeta:
        return ModelMeta(self._meta)

    def get_providers(self) -> list[str]:
        return [f"OpenVINO:{DEVICE}"]


def _arg(port) -> NodeArg:
    shape = [d.get_length() if d.is_static else "batch" for d in port.get_partial_shape()]
    kind = _ORT_TYPES.get(port.get_element_type().get_type_name(), str(port.get_element_type()))
    return NodeArg(port.get_any_name(), kind, shape)


def _metadata(model) -> dict:
    """ONNX metadata_props survive in rt_info['framework'] (measured, openvino 2026.4)."""
    if not model.has_rt_info(["framework", contract.METADATA_KEY]):
        return {}
    return {contract.METADATA_KEY: model.get_rt_info(["framework", contract.METADATA_KEY]).astype(str)}


def _lift_overridable(model, ov) -> tuple[object, dict[str, np.ndarray]]:
    """Constants named like the steering inputs -> parameters; returns (model, defaults)."""
    defaults, params = {}, []
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if op.get_type_name() != "Constant" or name not in contract.STEERING_INPUTS:
            continue
        value = op.get_data().copy()
        param = ov.opset13.parameter(list(value.shape), op.get_output_element_type(0), name=name)
        param.output(0).get_tensor().set_names({name})
        op.output(0).replace(param.output(0))
        defaults[name], params = value, [*params, param]
    if not params:
        return model, {}
    lifted = ov.Model(model.get_results(), [*model.get_parameters(), *params], model.get_friendly_name())
    return lifted, defaults
