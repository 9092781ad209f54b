"""Scale-out: files larger than memory, and training on several processes.

================  ==================================================================  ========
module            what                                                                appendix
================  ==================================================================  ========
``stream``        a ByteRec file read in chunks: index, encoder fit, shuffled batches  Scaling out
``ddp``           the process group, the training step, the sharded prediction        Scaling out
``distributed``   DistributedDataParallel training from the stream (``python -m``)     Scaling out
================  ==================================================================  ========

Nothing is imported here: ``python -m mmoe_annotated.scale.distributed`` runs that module as
the program, which it could not if this package had imported it first.
"""
