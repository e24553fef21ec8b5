"""SFTP: the block (`block.SftpSource`) and its private transport: `connection` (paramiko
session, host keys), `paramiko_compat` (the paramiko internals it relies on, in one place),
`chunk_pipe` and `fast_read` (pipelined reads), `parallel` and `range_worker` (ranged reads
of one big file over several connections)."""
