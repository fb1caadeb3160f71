"""Export a trained network for use without mmdist: TorchScript (every variant, the saliency's
input gradient inside the graph) or ONNX. Entry: ``python -m mmdist.export`` (see __main__)."""
