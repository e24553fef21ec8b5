"""PostgreSQL and MySQL/MariaDB tables, incremental: the block (`block.SqlSource`), per-server
SQL (`dialects`) and the watermark window (`watermark`)."""
