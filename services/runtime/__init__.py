"""The runtime service: hosts agents and answers ``<ns>.agent.<id>.message.handle``."""
