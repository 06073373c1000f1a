"""The connector kit: what a connector author builds on besides the contract.

:mod:`connector_sdk.kit.simulator` holds the building blocks of a vendor simulator (a loopback HTTP server with
routes, auth, error envelopes, paging, faults, keys and a control plane); it imports only the standard library and
never the host, stores, CLI or portal, so connectors and their tests may import it freely.
:mod:`connector_sdk.kit.conformance` is the conformance suite a connector's tests run against its simulator; it
drives a real host, so it is the top layer of the SDK and only tests import it. This package imports neither.
"""
