"""The connector kit: what a connector author builds on besides the contract.

:mod:`connector_sdk.kit.simulator` holds the building blocks of a vendor simulator (a loopback HTTP server with
routes, auth, error envelopes, paging, faults, keys and a control plane). The kit imports only the standard library
and never the host, stores, CLI or portal, so connectors and their tests may import it freely.
"""
