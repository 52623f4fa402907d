"""Pure protocol logic (no I/O): parsing and building what goes over the wire, shared by the
sync and async backends so both behave alike and are tested once with canned bytes.
"""
