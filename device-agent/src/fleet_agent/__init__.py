"""fleet onboard agent: reads fixes, signs them, stores and forwards them over MQTT 5."""

__version__ = "0.1.0"
