"""Object encoding: a sealed batch's records → the objects written for it (convert → compress → encrypt).

The stage between the pipeline and the destinations. It knows records as bytes
with their arrival times and produces ``ObjectBatch`` values; it never imports
the spool, the pipeline, the record chain or a destination, and it is handed
only what it acts on (the codec, the conversion, whether the store encrypts),
never a stream's whole configuration.
"""
