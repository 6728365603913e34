"""Turn an exported fp32 ONNX graph into an fp16 one: every float32 tensor, input and output becomes float16.

Why a graph rewrite rather than a second export of ``model.half()``: the export is the slow part (tens of seconds),
and the rewrite gives exactly the fp32 graph's operators at half precision. The result takes and returns float16
(the usual convention of fp16 ONNX upscalers, which chaiNNer detects from the input type).
"""

from __future__ import annotations

import numpy as np

from ..errors import MlkasrError

_FP16_MAX = float(np.finfo(np.float16).max)


def convert_to_fp16(model):  # onnx.ModelProto -> onnx.ModelProto (modified in place and returned)
    import onnx
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    for node in graph.node:
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            raise MlkasrError(f"fp16 export: node {node.name!r} ({node.op_type}) has a subgraph; not supported")

    def half(tensor):
        values = numpy_helper.to_array(tensor)
        if np.isfinite(values).all() and np.abs(values).max(initial=0.0) > _FP16_MAX:
            raise MlkasrError(f"fp16 export: tensor {tensor.name!r} holds values beyond the float16 range "
                              f"({np.abs(values).max():.3g} > {_FP16_MAX:.0f}); export in fp32")
        return numpy_helper.from_array(values.astype(np.float16), tensor.name)

    for k, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.FLOAT:
            graph.initializer[k].CopyFrom(half(tensor))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(half(attr.t))  # Constant nodes
            elif node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    return model
