"""Notebook widgets: a device picker (the chat widget joins it later)."""
from __future__ import annotations


def device_picker(devices: list[str], value: str | None = None, description: str = "Device"):
    """A dropdown of the devices a runtime reports, e.g. `openvino.Core().available_devices`.

    The selected device is `picker.value`; it starts at `value`, or the first device.
    """
    import ipywidgets as widgets

    options = list(dict.fromkeys(devices))  # keep order, drop duplicates
    return widgets.Dropdown(options=options, value=value if value in options else options[0],
                            description=description)
