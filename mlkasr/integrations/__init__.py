"""mlkasr in other tools: spandrel (ComfyUI, chaiNNer), OpenModelDB model cards.

These modules use the core (``mlkasr.models``, ``mlkasr.weights``); the core never imports them. Import each one
by name: ``mlkasr.integrations.spandrel`` needs the optional spandrel package, the others need nothing extra.
"""
