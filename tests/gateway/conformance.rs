//! Conformance: one list of statements runs directly against the primary and through Sluice, and
//! what the client sees is compared value by value and flag by flag, for the text protocol
//! (COM_QUERY) and the binary protocol (COM_STMT_EXECUTE).

use mysql_async::consts::StatusFlags;
use mysql_async::prelude::*;
use mysql_async::{Conn, Error, Params, Value};
use sha2::{Digest, Sha256};

use crate::harness::{TestGateway, fleet, primary_only_config};

/// What a client sees of one result.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Set {
        columns: Vec<String>,
        rows: Vec<Vec<Value>>,
    },
    Ok {
        affected: u64,
        insert_id: Option<u64>,
        warnings: u16,
        info: String,
    },
    Err {
        code: u16,
        state: String,
        message: String,
    },
    /// Final status flags of the statement (SESSION_STATE_CHANGED aside: not offered by Sluice).
    Status(u16),
}

fn describe_columns(columns: &[mysql_async::Column]) -> Vec<String> {
    columns
        .iter()
        .map(|c| {
            format!(
                "schema={} table={} org_table={} name={} org_name={} charset={} len={} type={:?} flags={:?} decimals={}",
                c.schema_str(),
                c.table_str(),
                c.org_table_str(),
                c.name_str(),
                c.org_name_str(),
                c.character_set(),
                c.column_length(),
                c.column_type(),
                c.flags(),
                c.decimals()
            )
        })
        .collect()
}

/// Large values are compared by digest so a failure prints something readable.
fn shrink(v: Value) -> Value {
    match v {
        Value::Bytes(b) if b.len() > 4096 => {
            Value::Bytes(format!("{} bytes sha256={:x}", b.len(), Sha256::digest(&b)).into_bytes())
        }
        other => other,
    }
}

async fn collect<P: mysql_async::prelude::Protocol>(
    mut r: mysql_async::QueryResult<'_, '_, P>,
    out: &mut Vec<Seen>,
) -> Result<(), Error> {
    while let Some(columns) = r.columns() {
        if columns.is_empty() {
            out.push(Seen::Ok {
                affected: r.affected_rows(),
                insert_id: r.last_insert_id(),
                warnings: r.warnings(),
                info: r.info().into_owned(),
            });
            if r.is_empty() {
                break;
            }
            r.next().await?;
            continue;
        }
        let mut rows = Vec::new();
        while let Some(row) = r.next().await? {
            rows.push(row.unwrap().into_iter().map(shrink).collect());
        }
        out.push(Seen::Set {
            columns: describe_columns(&columns),
            rows,
        });
    }
    Ok(())
}

fn push_err(out: &mut Vec<Seen>, e: Error) {
    match e {
        Error::Server(s) => out.push(Seen::Err {
            code: s.code,
            state: s.state,
            message: s.message,
        }),
        other => panic!("client-side error: {other:?}"),
    }
}

fn push_status(out: &mut Vec<Seen>, conn: &Conn) {
    let flags = conn
        .last_ok_packet()
        .map_or(0, |ok| ok.status_flags().bits());
    out.push(Seen::Status(
        flags & !StatusFlags::SERVER_SESSION_STATE_CHANGED.bits(),
    ));
}

async fn run_text(conn: &mut Conn, sql: &str) -> Vec<Seen> {
    let mut out = Vec::new();
    let res = match conn.query_iter(sql).await {
        Ok(r) => collect(r, &mut out).await,
        Err(e) => Err(e),
    };
    if let Err(e) = res {
        push_err(&mut out, e);
    } else {
        push_status(&mut out, conn);
    }
    out
}

async fn run_binary(conn: &mut Conn, sql: &str, params: Params) -> Vec<Seen> {
    let mut out = Vec::new();
    let res = match conn.exec_iter(sql, params).await {
        Ok(r) => collect(r, &mut out).await,
        Err(e) => Err(e),
    };
    if let Err(e) = res {
        push_err(&mut out, e);
    } else {
        push_status(&mut out, conn);
    }
    out
}

const SETUP: &[&str] = &[
    "DROP TABLE IF EXISTS types",
    "DROP TABLE IF EXISTS big",
    "DROP PROCEDURE IF EXISTS two_sets",
    "DROP PROCEDURE IF EXISTS reshape",
    "DROP TABLE IF EXISTS reshaped",
    "CREATE TABLE types (id INT AUTO_INCREMENT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, \
     si SMALLINT, su SMALLINT UNSIGNED, mi MEDIUMINT, mu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED, \
     bi BIGINT, bu BIGINT UNSIGNED, dc DECIMAL(20,6), f FLOAT, d DOUBLE, dt DATE, tm TIME(6), \
     dtm DATETIME(6), ts TIMESTAMP(3) NULL, y YEAR, b BIT(12), e ENUM('a','b','c'), st SET('x','y','z'), \
     j JSON, bl BLOB, tx TEXT, vc VARCHAR(100) CHARACTER SET utf8mb4, vb VARBINARY(50), ch CHAR(5), lt LONGTEXT)",
    "CREATE TABLE big (id INT PRIMARY KEY, b LONGBLOB)",
    "CREATE PROCEDURE two_sets() BEGIN SELECT 1 AS one; SELECT 'two', 2.5; END",
    "CREATE PROCEDURE reshape(IN n INT) BEGIN SELECT n AS a; END",
    "CREATE TABLE reshaped (a INT)",
    "INSERT INTO reshaped VALUES (1)",
];

/// Prepared statements whose results change shape between executions: a procedure re-defined
/// with other result sets and columns, a table altered. The client keeps its statement (the
/// driver's cache); each execution's results are what the server sends for it.
const RESHAPES: &[(&str, &str)] = &[
    (
        "CALL reshape(?)",
        "CREATE OR REPLACE PROCEDURE reshape(IN n INT) BEGIN SELECT 'x' AS b, 2.5 AS c, n; SELECT n + 1; SELECT 'three' AS z, NULL; END",
    ),
    (
        "CALL reshape(?)",
        "CREATE OR REPLACE PROCEDURE reshape(IN n INT) BEGIN UPDATE reshaped SET a = a + n; END",
    ),
    (
        "CALL reshape(?)",
        "CREATE OR REPLACE PROCEDURE reshape(IN n INT) BEGIN SELECT n, n, n, n; SELECT CAST(n AS CHAR) AS s; END",
    ),
    (
        "SELECT *, ? FROM reshaped",
        "ALTER TABLE reshaped ADD COLUMN b VARCHAR(10) DEFAULT 'bee', ADD COLUMN c DOUBLE DEFAULT 1.5",
    ),
    (
        "SELECT *, ? FROM reshaped",
        "ALTER TABLE reshaped DROP COLUMN a",
    ),
];

const TEXT_STATEMENTS: &[&str] = &[
    "INSERT INTO types VALUES (NULL, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, \
     -9223372036854775808, 18446744073709551615, -12345678901234.123456, 3.14159, 2.718281828459045, \
     '2024-02-29', '-838:59:59.000000', '2024-02-29 23:59:59.999999', '2038-01-19 03:14:07.123', 2155, \
     b'101010101010', 'b', 'x,z', '{\"a\":[1,2,{\"b\":null}]}', x'00ff10', 'text ✓', 'héllo wörld 😀', \
     x'000102', 'ab', REPEAT('z', 70000))",
    "INSERT INTO types (id) VALUES (NULL)",
    "INSERT INTO types (ti, tm, dtm, f, d, dt) VALUES (0, '00:00:00', '1000-01-01 00:00:00', 0, -0.5, '1000-01-01')",
    "SELECT * FROM types ORDER BY id",
    "SELECT id, ti + 1, bi DIV 2, CONCAT(vc, '!'), NULL, 1.5, 1e10, -0.0, 1/3, PI() FROM types ORDER BY id",
    "SELECT _utf8mb4'ünïcödé ✓', CHAR(0 USING binary), '', X'', REPEAT('é', 1000), 'it''s'",
    "SELECT JSON_OBJECT('k', 1, 'arr', JSON_ARRAY(1, 2)), CAST(1 AS DECIMAL(10,3)), CAST(0.1 AS FLOAT)",
    "SELECT 1; SELECT 'two', 2; INSERT INTO types (ti) VALUES (7); SELECT LAST_INSERT_ID()",
    "UPDATE types SET ti = ti WHERE id > 0",
    "UPDATE types SET si = 1 WHERE id = 1",
    "INSERT IGNORE INTO types (ti) VALUES (1000)",
    "SHOW WARNINGS",
    "SELECT CAST('abc' AS SIGNED)",
    "SELECT * FROM no_such_table",
    "SELEC 1",
    "SELECT 1; SELECT * FROM no_such_table; SELECT 2",
    // An error after an OK result ends the statement there, with the error.
    "INSERT INTO types (ti) VALUES (11); INSERT INTO types (id) VALUES (1); SELECT 3",
    "DO 1; SELECT * FROM no_such_table",
    "DELETE FROM types WHERE id = 3",
    "SELECT COUNT(*), SUM(ti), MAX(dtm), MIN(tm) FROM types",
    "BEGIN",
    "INSERT INTO types (ti) VALUES (9)",
    "SELECT COUNT(*) FROM types",
    "ROLLBACK",
    "SET SESSION sql_mode = 'ANSI_QUOTES,NO_BACKSLASH_ESCAPES'",
    "SELECT \"id\", 'a\\b' FROM types ORDER BY id LIMIT 1",
    "SET SESSION sql_mode = DEFAULT",
    "SET time_zone = '+05:00'",
    "SELECT ts, @@time_zone FROM types WHERE id = 1",
    "SET time_zone = DEFAULT",
    "SET NAMES latin1",
    "SELECT 'é', vc FROM types WHERE id = 1",
    "SET NAMES utf8mb4",
    "CALL two_sets()",
    "SELECT id FROM types WHERE id = -1",
    "DO 1",
    "SELECT LENGTH(lt), LEFT(lt, 3) FROM types WHERE id = 1",
];

/// Binary protocol: (statement, parameters).
fn binary_statements() -> Vec<(&'static str, Params)> {
    vec![
        ("SELECT * FROM types ORDER BY id", Params::Empty),
        (
            "SELECT id, ti, bu, dc, f, d, dt, tm, dtm, ts, y, b, j FROM types WHERE id >= ? ORDER BY id",
            Params::Positional(vec![Value::Int(1)]),
        ),
        (
            "SELECT ?, ?, ?, ?, ?, ?, ?, ?",
            Params::Positional(vec![
                Value::Int(-5),
                Value::UInt(u64::MAX),
                Value::Bytes(b"str \xe2\x9c\x93".to_vec()),
                Value::NULL,
                Value::Double(1.5),
                Value::Float(2.25),
                Value::Date(2024, 2, 29, 13, 14, 15, 16),
                Value::Time(true, 1, 2, 3, 4, 5),
            ]),
        ),
        (
            "INSERT INTO types (ti, vc) VALUES (?, ?)",
            Params::Positional(vec![Value::Int(3), Value::Bytes("ü".as_bytes().to_vec())]),
        ),
        (
            "UPDATE types SET ti = ? WHERE id = ?",
            Params::Positional(vec![Value::Int(4), Value::Int(1)]),
        ),
        (
            "SELECT * FROM no_such_table WHERE id = ?",
            Params::Positional(vec![Value::Int(1)]),
        ),
        ("CALL two_sets()", Params::Empty),
        (
            "INSERT INTO big VALUES (?, ?)",
            Params::Positional(vec![Value::Int(1), Value::Bytes(big_blob())]),
        ),
        (
            "SELECT id, b FROM big WHERE id = ?",
            Params::Positional(vec![Value::Int(1)]),
        ),
        ("SELECT b FROM big WHERE id = 1", Params::Empty),
    ]
}

/// 20 MiB: more than one 16 MiB packet in both directions.
fn big_blob() -> Vec<u8> {
    (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

async fn run_all(conn: &mut Conn) -> Vec<(String, Vec<Seen>)> {
    for s in SETUP {
        conn.query_drop(*s).await.expect("setup");
    }
    let mut out = Vec::new();
    for s in TEXT_STATEMENTS {
        out.push((format!("text: {s}"), run_text(conn, s).await));
    }
    for (s, p) in binary_statements() {
        out.push((format!("binary: {s}"), run_binary(conn, s, p).await));
    }
    for (i, (stmt, change)) in RESHAPES.iter().enumerate() {
        let p = || Params::Positional(vec![Value::Int(i as i64 + 1)]);
        out.push((
            format!("binary before change {i}: {stmt}"),
            run_binary(conn, stmt, p()).await,
        ));
        conn.query_drop(*change).await.expect("change");
        out.push((
            format!("binary after change {i}: {stmt}"),
            run_binary(conn, stmt, p()).await,
        ));
    }
    // The 20 MiB value also through the text protocol.
    out.push((
        "text: SELECT b FROM big".into(),
        run_text(conn, "SELECT b FROM big").await,
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_binary_results_match_direct() {
    let f = fleet();
    f.sql(0, "CREATE DATABASE IF NOT EXISTS app_conformance");
    let gw = TestGateway::start(primary_only_config());

    let mut direct = Conn::new(f.direct_opts(0, "app", "app-secret", Some("app_conformance")))
        .await
        .expect("direct");
    let expected = run_all(&mut direct).await;
    direct.disconnect().await.expect("disconnect");

    let mut through = Conn::new(gw.opts("app", "app-secret", Some("app_conformance")))
        .await
        .expect("through sluice");
    let got = run_all(&mut through).await;

    assert_eq!(expected.len(), got.len());
    let mut mismatches = Vec::new();
    for ((stmt, want), (_, have)) in expected.iter().zip(&got) {
        if want != have {
            mismatches.push(format!("{stmt}\n  direct: {want:?}\n  sluice: {have:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} statements differ:\n{}",
        mismatches.len(),
        expected.len(),
        mismatches.join("\n")
    );
    // The list really covers errors, warnings, multi-results and the big value.
    let all: Vec<&Seen> = expected.iter().flat_map(|(_, s)| s).collect();
    assert!(
        all.iter()
            .any(|s| matches!(s, Seen::Err { code: 1146, .. }))
    );
    assert!(
        all.iter()
            .any(|s| matches!(s, Seen::Ok { warnings: 1.., .. }))
    );
    assert!(all.iter().any(|s| matches!(s, Seen::Set { rows, .. } if rows.iter().flatten().any(|v| matches!(v, Value::Bytes(b) if b.starts_with(b"20971520 bytes"))))));
}
