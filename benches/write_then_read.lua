-- sysbench workload: each event writes a row and reads it back at once by its key, on one
-- connection (what an application that reads its own writes does). Used by scripts/bench-ryw.
function prepare()
  local con = sysbench.sql.driver():connect()
  con:query("CREATE TABLE IF NOT EXISTS ryw_bench (id BIGINT PRIMARY KEY, v INT)")
end

function cleanup()
  local con = sysbench.sql.driver():connect()
  con:query("DROP TABLE IF EXISTS ryw_bench")
end

function thread_init()
  con = sysbench.sql.driver():connect()
  n = 0
end

function event()
  n = n + 1
  local id = (sysbench.tid + 1) * 1000000000 + n
  con:query(string.format("REPLACE INTO ryw_bench (id, v) VALUES (%d, %d)", id, n))
  con:query_row(string.format("SELECT v FROM ryw_bench WHERE id = %d", id))
end

function thread_done()
  con:disconnect()
end
