-- sysbench workload: an application with autocommit off (PyMySQL's and SQLAlchemy's default):
-- each event is one implicit transaction of --reads point selects, then, with --write=on, one
-- UPDATE of a random row, then COMMIT. Used by scripts/bench-optimistic.
sysbench.cmdline.options = {
  rows = {"rows in the table", 10000},
  reads = {"point selects per transaction", 4},
  write = {"end each transaction with an UPDATE", false},
}

function prepare()
  local con = sysbench.sql.driver():connect()
  con:query("CREATE TABLE IF NOT EXISTS ac_off (id INT PRIMARY KEY, v INT, pad CHAR(60))")
  con:query("DELETE FROM ac_off")
  for i = 1, sysbench.opt.rows, 1000 do
    local values = {}
    for j = i, math.min(i + 999, sysbench.opt.rows) do
      values[#values + 1] = string.format("(%d, 0, 'pad')", j)
    end
    con:query("INSERT INTO ac_off VALUES " .. table.concat(values, ","))
  end
end

function cleanup()
  local con = sysbench.sql.driver():connect()
  con:query("DROP TABLE IF EXISTS ac_off")
end

function thread_init()
  con = sysbench.sql.driver():connect()
  con:query("SET autocommit = 0")
end

function event()
  for _ = 1, sysbench.opt.reads do
    con:query_row(string.format("SELECT v, pad FROM ac_off WHERE id = %d",
      sysbench.rand.uniform(1, sysbench.opt.rows)))
  end
  if sysbench.opt.write then
    con:query(string.format("UPDATE ac_off SET v = v + 1 WHERE id = %d",
      sysbench.rand.uniform(1, sysbench.opt.rows)))
  end
  con:query("COMMIT")
end

function thread_done()
  con:disconnect()
end
