//! Query facts: what the gateway knows about a statement from one pass of a fast lexer (no full
//! parse): its kind, whether it only reads, locking reads, WHERE presence, tables, a digest with
//! literals folded to `?`, `/* sluice:key=value */` hints, and the session effects that decide
//! multiplexing (user variables, temporary tables, locks, SET targets, ...).
//!
//! The lexer never fails: unknown bytes are skipped, unterminated strings and comments end at the
//! end of input.

/// The kind of a statement, from its first keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Replace,
    Ddl,
    Transaction,
    Set,
    Use,
    Show,
    Call,
    LoadData,
    #[default]
    Other,
}

impl StatementKind {
    pub const ALL: [Self; 13] = [
        Self::Select,
        Self::Insert,
        Self::Update,
        Self::Delete,
        Self::Replace,
        Self::Ddl,
        Self::Transaction,
        Self::Set,
        Self::Use,
        Self::Show,
        Self::Call,
        Self::LoadData,
        Self::Other,
    ];

    /// Its position in [`Self::ALL`] (for per-kind counters).
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Select => "select",
            Self::Insert => "insert",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Replace => "replace",
            Self::Ddl => "ddl",
            Self::Transaction => "transaction",
            Self::Set => "set",
            Self::Use => "use",
            Self::Show => "show",
            Self::Call => "call",
            Self::LoadData => "load_data",
            Self::Other => "other",
        }
    }
}

/// A session-scoped variable assignment found in a SET statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetTarget {
    /// `SET [SESSION] name = ...` / `SET @@[session.]name = ...`: replayable once read back.
    Session(String),
    /// `SET NAMES ...` / `SET CHARACTER SET ...`: the connection character set variables.
    Names,
}

/// Why a statement ties the session to its backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinReason {
    UserVariable,
    TemporaryTable,
    GetLock,
    LockTables,
    SqlCalcFoundRows,
    TextPrepare,
    NextTransactionCharacteristics,
    UnparsedSet,
    XaTransaction,
    Handler,
}

impl PinReason {
    pub fn describe(self) -> &'static str {
        match self {
            Self::UserVariable => "user variable (@name)",
            Self::TemporaryTable => "temporary table",
            Self::GetLock => "GET_LOCK() named lock",
            Self::LockTables => "LOCK TABLES",
            Self::SqlCalcFoundRows => "SQL_CALC_FOUND_ROWS",
            Self::TextPrepare => "text-protocol PREPARE",
            Self::NextTransactionCharacteristics => "SET TRANSACTION for the next transaction",
            Self::UnparsedSet => "SET the gateway could not replay",
            Self::XaTransaction => "XA transaction",
            Self::Handler => "HANDLER cursor",
        }
    }
}

/// Everything the host computes about one COM_QUERY (or prepared) statement.
#[derive(Debug, Clone, Default)]
pub struct QueryFacts {
    pub kind: StatementKind,
    pub read_only: bool,
    pub locking_read: bool,
    pub has_where: bool,
    pub tables: Vec<String>,
    pub multi_statement: bool,
    /// How many statements the packet holds.
    pub statements: u32,
    /// Bit `i` set when statement `i` (of the first 64) is a CALL or an anonymous block: it
    /// answers with its result sets and then an OK, where any other statement answers once.
    pub calls: u64,
    pub digest: String,
    /// A keyed hash of `digest` (random keys per process, so shapes cannot be forged to
    /// collide): the key of per-digest caches.
    pub digest_hash: u64,
    pub hints: Vec<(String, String)>,
    /// Session effects over all statements in the packet.
    pub pins: Vec<PinReason>,
    pub set_targets: Vec<SetTarget>,
    pub changes_schema: bool,
    /// Mentions LAST_INSERT_ID(), ROW_COUNT(), FOUND_ROWS(), warnings or errors of the previous
    /// statement: state of the backend connection that ran it.
    pub needs_previous_connection: bool,
    pub mentions_connection_id: bool,
    /// Reads `@@socket`: the gateway answers it (NULL, as a server without a local socket), or
    /// a driver on the backend's host would reconnect to the backend's socket past the gateway.
    pub mentions_socket: bool,
    /// Calls `ROW_COUNT()`.
    pub mentions_row_count: bool,
    /// Calls `FOUND_ROWS()`.
    pub mentions_found_rows: bool,
    /// `KILL [QUERY|CONNECTION] n`: (query_only, n); n is `None` for `CONNECTION_ID()`, the
    /// session itself.
    pub kill: Option<(bool, Option<u64>)>,
    /// LOAD DATA LOCAL INFILE (the client would stream a file).
    pub local_infile: bool,
    /// `BEGIN`, `START TRANSACTION [READ ONLY | READ WRITE | WITH CONSISTENT SNAPSHOT]`: opens a
    /// transaction explicitly, with this access mode.
    pub starts_transaction: Option<TransactionAccess>,
}

/// A transaction's access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionAccess {
    ReadWrite,
    /// Declared `READ ONLY`: a replica may serve it.
    ReadOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    /// A word and its keyword key ([`key`]).
    Word(&'a str, u128),
    Quoted(&'a str),
    /// `"..."`: a string, or an identifier under `ANSI_QUOTES` (decided by where it stands).
    DoubleQuoted(&'a str),
    Str,
    Num,
    UserVar,
    SysVar(&'a str),
    Punct(u8),
    Placeholder,
}

struct Lexer<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    hints: Vec<(String, String)>,
}

impl<'a> Lexer<'a> {
    fn new(s: &'a str) -> Self {
        Self {
            s,
            b: s.as_bytes(),
            i: 0,
            hints: Vec::new(),
        }
    }

    fn peek(&self, k: usize) -> u8 {
        self.b.get(self.i + k).copied().unwrap_or(0)
    }

    fn skip_trivia(&mut self) {
        loop {
            let c = self.peek(0);
            let class = CLASS[usize::from(c)];
            if class & TRIVIA == 0 {
                // Most tokens: no trivia before them, or one space (below).
                return;
            }
            if class & SPACE != 0 {
                self.i += 1;
            } else if c == b'#'
                || (c == b'-'
                    && self.peek(1) == b'-'
                    && matches!(self.peek(2), b' ' | b'\t' | b'\n' | b'\r' | 0))
            {
                while self.i < self.b.len() && self.b[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if c == b'/' && self.peek(1) == b'*' {
                if self.peek(2) == b'!' || (self.peek(2) == b'M' && self.peek(3) == b'!') {
                    // Executable comment: its body is code. Skip the marker and version digits.
                    self.i += if self.peek(2) == b'!' { 3 } else { 4 };
                    while self.peek(0).is_ascii_digit() {
                        self.i += 1;
                    }
                    continue;
                }
                let start = self.i + 2;
                let end = self.s[start..]
                    .find("*/")
                    .map_or(self.b.len(), |e| start + e);
                self.hint(&self.s[start..end]);
                self.i = (end + 2).min(self.b.len());
            } else if c == b'*' && self.peek(1) == b'/' {
                self.i += 2; // end of an executable comment
            } else {
                return;
            }
        }
    }

    fn hint(&mut self, body: &str) {
        let body = body.trim();
        if let Some(rest) = body.strip_prefix("sluice:") {
            for kv in rest.split([',', ' ']).filter(|p| !p.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                self.hints
                    .push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
    }

    fn quoted(&mut self, q: u8) -> &'a str {
        let start = self.i + 1;
        self.i += 1;
        while self.i < self.b.len() {
            let c = self.b[self.i];
            if c == b'\\' && q != b'`' {
                self.i += 2;
            } else if c == q {
                if self.peek(1) == q {
                    self.i += 2;
                } else {
                    self.i += 1;
                    return &self.s[start..self.i - 1];
                }
            } else {
                self.i += 1;
            }
        }
        self.i = self.b.len();
        &self.s[start.min(self.b.len())..]
    }

    fn word_end(&self, from: usize) -> usize {
        self.plain_word_end(from).0
    }

    /// The end of the word at `from` (letters, digits, `_`, `$`, non-ASCII), and whether the
    /// word is plain: ASCII letters and `_` only.
    fn plain_word_end(&self, from: usize) -> (usize, bool) {
        let mut j = from;
        let mut plain = true;
        while let Some(&c) = self.b.get(j) {
            let class = CLASS[usize::from(c)];
            if class & WORD == 0 {
                break;
            }
            plain &= class & PLAIN != 0;
            j += 1;
        }
        (j, plain)
    }

    fn next_tok(&mut self) -> Option<Tok<'a>> {
        self.skip_trivia();
        let c = self.peek(0);
        if self.i >= self.b.len() {
            return None;
        }
        Some(match c {
            b'\'' => {
                self.quoted(c);
                Tok::Str
            }
            b'"' => Tok::DoubleQuoted(self.quoted(b'"')),
            b'`' => Tok::Quoted(self.quoted(b'`')),
            b'?' => {
                self.i += 1;
                Tok::Placeholder
            }
            b'@' => {
                if self.peek(1) == b'@' {
                    self.i += 2;
                    let start = self.i;
                    // @@session.x / @@global.x / @@x
                    let mut end = self.word_end(start);
                    if self.b.get(end) == Some(&b'.') {
                        end = self.word_end(end + 1);
                    }
                    self.i = end.max(start);
                    Tok::SysVar(&self.s[start..self.i])
                } else {
                    self.i += 1;
                    if matches!(self.peek(0), b'\'' | b'"' | b'`') {
                        self.quoted(self.peek(0));
                    } else {
                        self.i = self.word_end(self.i);
                    }
                    Tok::UserVar
                }
            }
            b'0'..=b'9' => {
                let mut j = self.i;
                while j < self.b.len() && (self.b[j].is_ascii_alphanumeric() || self.b[j] == b'.') {
                    j += 1;
                }
                // 1e+5
                while j < self.b.len()
                    && matches!(self.b[j], b'+' | b'-')
                    && matches!(self.b[j - 1], b'e' | b'E')
                {
                    j += 1;
                    while j < self.b.len() && self.b[j].is_ascii_digit() {
                        j += 1;
                    }
                }
                self.i = j;
                Tok::Num
            }
            b'.' if self.peek(1).is_ascii_digit() => {
                self.i += 1;
                while self.peek(0).is_ascii_digit() {
                    self.i += 1;
                }
                Tok::Num
            }
            // Letters, `_`, `$`, non-ASCII (digits were taken above).
            c if CLASS[usize::from(c)] & WORD != 0 => {
                // x'0A' / b'01' / N'..' / _utf8'..' literals
                let (end, plain) = self.plain_word_end(self.i);
                if self.b.get(end) == Some(&b'\'') {
                    let w = &self.s[self.i..end];
                    if w.eq_ignore_ascii_case("x")
                        || w.eq_ignore_ascii_case("b")
                        || w.eq_ignore_ascii_case("n")
                        || w.starts_with('_')
                    {
                        self.i = end;
                        self.quoted(b'\'');
                        return Some(Tok::Str);
                    }
                }
                let w = &self.s[self.i..end];
                // Only plain words (letters and `_`) can be keywords.
                let k = if plain {
                    key_at(self.b, self.i, end)
                } else {
                    LONG
                };
                self.i = end;
                Tok::Word(w, k)
            }
            _ => {
                // Step over one whole character so slicing stays on char boundaries.
                let len = self.s[self.i..].chars().next().map_or(1, char::len_utf8);
                self.i += len;
                Tok::Punct(c)
            }
        })
    }
}

/// Byte classes, so the lexer's inner loops test a byte with one table load.
/// Continues a word: ASCII letters and digits, `_`, `$`, non-ASCII bytes.
const WORD: u8 = 1;
/// Can be part of a keyword: ASCII letters and `_`.
const PLAIN: u8 = 2;
/// ASCII whitespace.
const SPACE: u8 = 4;
/// Can start trivia (whitespace or a comment): whitespace, `#`, `-`, `/`, `*`.
const TRIVIA: u8 = 8;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        let mut k = 0;
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80 {
            k |= WORD;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            k |= PLAIN;
        }
        if c.is_ascii_whitespace() {
            k |= SPACE | TRIVIA;
        }
        if matches!(c, b'#' | b'-' | b'/' | b'*') {
            k |= TRIVIA;
        }
        t[i] = k;
        i += 1;
    }
    t
};

/// A word's keyword key: its bytes, ASCII letters upper-cased, packed into an integer, so that
/// testing a word against a keyword is one integer compare. Clearing bit 5 upper-cases letters;
/// it also changes digits, `$` and non-ASCII bytes, but no keyword has those, so a word matches a
/// keyword's key only if it is that keyword. Words over 16 bytes, and words that are not plain
/// (digits, `$`, non-ASCII), get `LONG`, which no keyword has.
const fn key_of(b: &[u8]) -> u128 {
    if b.len() > 16 {
        return LONG;
    }
    let mut k = 0u128;
    let mut i = 0;
    while i < b.len() {
        k |= ((b[i] & !0x20) as u128) << (8 * i);
        i += 1;
    }
    k
}

/// The key of the word `sql[start..end]`: one 16-byte load from the statement where it has 16
/// bytes left (no copy), the bytes past the word masked off.
fn key_at(sql: &[u8], start: usize, end: usize) -> u128 {
    const UPPER: u128 = !0x2020_2020_2020_2020_2020_2020_2020_2020;
    let len = end - start;
    if len > 16 {
        return LONG;
    }
    let Some(chunk) = sql.get(start..start + 16) else {
        // Near the end of the statement: byte by byte.
        return key_of(&sql[start..end]);
    };
    let mut buf = [0u8; 16];
    buf.copy_from_slice(chunk);
    let mask = if len == 16 {
        u128::MAX
    } else {
        (1u128 << (8 * len)) - 1
    };
    u128::from_le_bytes(buf) & mask & UPPER
}

const LONG: u128 = u128::MAX;

/// Keyword keys, named after their keywords.
macro_rules! keywords {
    ($($name:ident)*) => { $(pub const $name: u128 = super::key_of(stringify!($name).as_bytes());)* };
}

#[allow(clippy::doc_markdown)]
mod kw {
    keywords!(
        ALTER ANALYZE BEGIN CALL CASE CHARACTER CHARSET COMMIT CONNECTION CONNECTION_ID CREATE DATA
        DEALLOCATE DEFAULT DELAYED DELETE DESC DESCRIBE DROP DUAL DUMPFILE ERRORS EVENT EXECUTE EXISTS
        EXPLAIN FOR FOUND_ROWS FROM FUNCTION GET_LOCK GLOBAL HANDLER HELP HIGH_PRIORITY IF IGNORE IN INSERT
        INTO JOIN KILL LAST_INSERT_ID LATERAL LOAD LOCAL LOCK LOOP LOW_PRIORITY NAMES NOT ONLY OPTIMIZE
        OUTFILE PACKAGE PASSWORD PREPARE PROCEDURE QUERY QUICK READ RELEASE RENAME REPAIR REPEAT REPLACE
        ROLE ROLLBACK ROW_COUNT
        SAVEPOINT SELECT SESSION SET SHARE SHOW START STATEMENT TABLE TABLES TEMPORARY TRANSACTION
        TRIGGER TRUNCATE UPDATE USE VALUE VALUES WARNINGS WHERE WHILE WITH XA XML
    );
}

fn is(t: Option<&Tok<'_>>, keyword: u128) -> bool {
    matches!(t, Some(Tok::Word(_, k)) if *k == keyword)
}

fn kind_of(first: u128, second: Option<&Tok<'_>>) -> StatementKind {
    use StatementKind as K;
    match first {
        kw::SELECT | kw::WITH | kw::VALUES | kw::TABLE => K::Select,
        kw::INSERT => K::Insert,
        kw::UPDATE => K::Update,
        kw::DELETE => K::Delete,
        kw::REPLACE => K::Replace,
        kw::CREATE
        | kw::ALTER
        | kw::DROP
        | kw::TRUNCATE
        | kw::RENAME
        | kw::ANALYZE
        | kw::OPTIMIZE
        | kw::REPAIR => K::Ddl,
        kw::BEGIN | kw::COMMIT | kw::ROLLBACK | kw::SAVEPOINT | kw::RELEASE | kw::XA => {
            K::Transaction
        }
        kw::START if is(second, kw::TRANSACTION) => K::Transaction,
        kw::SET => K::Set,
        kw::USE => K::Use,
        kw::SHOW | kw::DESCRIBE | kw::DESC | kw::EXPLAIN | kw::HELP => K::Show,
        kw::CALL => K::Call,
        kw::LOAD if is(second, kw::DATA) || is(second, kw::XML) => K::LoadData,
        _ => K::Other,
    }
}

/// A statement that is a compound block from its first word: `BEGIN NOT ATOMIC`, or IF, CASE,
/// LOOP, WHILE, REPEAT outside a stored program (MariaDB runs these as one statement).
fn starts_compound(first: u128, second: Option<&Tok<'_>>) -> bool {
    match first {
        kw::BEGIN => is(second, kw::NOT),
        kw::CASE | kw::LOOP | kw::WHILE | kw::REPEAT => true,
        // `IF(...)` is a function; the IF statement is `IF <condition> THEN`.
        kw::IF => !matches!(second, Some(Tok::Punct(b'('))),
        _ => false,
    }
}

/// After CREATE: the object is a stored program, whose body may hold `;`.
fn defines_program(word: u128) -> bool {
    matches!(
        word,
        kw::PROCEDURE | kw::FUNCTION | kw::TRIGGER | kw::EVENT | kw::PACKAGE
    )
}

/// Per-statement state while scanning.
#[derive(Default)]
struct StmtScan {
    words: usize,
    first: Option<StatementKind>,
    into: bool,
    /// The statement began with CREATE.
    create: bool,
    /// A compound statement (a stored program's definition, `BEGIN NOT ATOMIC`, a top-level
    /// IF/CASE/LOOP/WHILE/REPEAT): its `;` separate the body's statements, not the client's.
    compound: bool,
}

/// Computes the facts of `sql` in one pass.
pub fn analyze(sql: &str) -> QueryFacts {
    let mut f = QueryFacts::default();
    let mut lx = Lexer::new(sql);
    // Room for a word's 16-byte store past the end (see `push_digest`).
    let mut digest: Vec<u8> = Vec::with_capacity(sql.len() + 16);
    let mut prev: Option<Tok<'_>> = None;
    let mut prev2: Option<Tok<'_>> = None;
    let mut stmt = StmtScan::default();
    let mut statements = 0usize;
    let mut first_kind_set = false;
    let mut in_set = false;
    let mut set_expect_name = false;
    let mut paren_depth = 0i32;
    // An `IN (` or `VALUES (` was seen: the digest may have value lists to fold.
    let mut value_lists = false;

    while let Some(t) = lx.next_tok() {
        // A double-quoted name where only a name can stand (after FROM, JOIN... or a `.`) is an
        // identifier under ANSI_QUOTES (and a syntax error otherwise): a table a guard must see.
        let t = match t {
            Tok::DoubleQuoted(name)
                if is_table_context(prev.as_ref(), prev2.as_ref())
                    || matches!(prev, Some(Tok::Punct(b'.'))) =>
            {
                Tok::Quoted(name)
            }
            Tok::DoubleQuoted(_) => Tok::Str,
            other => other,
        };
        // Digest: literals -> ?, one space between tokens, words upper-cased (identifiers too:
        // statements that differ only in case share a digest).
        push_digest(&mut digest, &t, prev.as_ref());

        if stmt.words == 0 {
            if let Tok::Punct(b';') = t {
                prev2 = prev;
                prev = Some(t);
                continue;
            }
            if matches!(t, Tok::Punct(b'(')) {
                prev2 = prev;
                prev = Some(t);
                continue;
            }
            statements += 1;
        }
        match t {
            Tok::Word(w, key) => {
                stmt.words += 1;
                if stmt.words == 1 {
                    let second = lx_peek_word(&lx);
                    let k = kind_of(key, second.as_ref());
                    stmt.first = Some(k);
                    stmt.create = key == kw::CREATE;
                    stmt.compound = starts_compound(key, second.as_ref());
                    // An anonymous block answers like a procedure.
                    if k == StatementKind::Call || stmt.compound {
                        f.calls |= 1u64.checked_shl(statements as u32 - 1).unwrap_or(0);
                    }
                    if !first_kind_set {
                        f.kind = k;
                        first_kind_set = true;
                    }
                    on_first_word(&mut f, key, second.as_ref(), &lx);
                    in_set = k == StatementKind::Set;
                    set_expect_name = in_set;
                    if in_set {
                        scan_set_start(&mut f, &lx);
                    }
                } else {
                    stmt.compound |= stmt.create && defines_program(key);
                    on_word(
                        &mut f,
                        w,
                        key,
                        prev.as_ref(),
                        prev2.as_ref(),
                        &mut stmt,
                        &lx,
                    );
                }
                if in_set && set_expect_name && paren_depth == 0 && stmt.words > 1 {
                    set_expect_name = false;
                    record_set_target(&mut f, w, key, &lx);
                }
            }
            Tok::Quoted(name) => {
                stmt.words += 1;
                if is_table_context(prev.as_ref(), prev2.as_ref())
                    && stmt.first != Some(StatementKind::Set)
                {
                    push_table(&mut f, name, &lx);
                }
            }
            Tok::UserVar => {
                stmt.words += 1;
                f.pins.push(PinReason::UserVariable);
                set_expect_name = false;
            }
            Tok::SysVar(name) => {
                stmt.words += 1;
                let lname = name.to_ascii_lowercase();
                if matches!(
                    lname.as_str(),
                    "warning_count"
                        | "error_count"
                        | "session.warning_count"
                        | "session.error_count"
                ) {
                    f.needs_previous_connection = true;
                }
                f.mentions_socket |= matches!(lname.as_str(), "socket" | "global.socket");
                if in_set && set_expect_name && paren_depth == 0 {
                    set_expect_name = false;
                    if let Some(global) = lname.strip_prefix("global.") {
                        let _ = global; // a global change is not session state
                    } else {
                        let n = lname
                            .trim_start_matches("session.")
                            .trim_start_matches("local.");
                        f.set_targets.push(SetTarget::Session(n.to_string()));
                    }
                }
            }
            Tok::Punct(b';') if stmt.compound => {}
            Tok::Punct(b';') => {
                // A new statement starts after this (if anything follows).
                stmt = StmtScan::default();
                in_set = false;
            }
            Tok::Punct(b'(') => {
                paren_depth += 1;
                value_lists |= is(prev.as_ref(), kw::IN)
                    || is(prev.as_ref(), kw::VALUES)
                    || is(prev.as_ref(), kw::VALUE);
            }
            Tok::Punct(b')') => paren_depth -= 1,
            Tok::Punct(b',') if in_set && paren_depth == 0 => set_expect_name = true,
            _ => {}
        }
        prev2 = prev;
        prev = Some(t);
    }
    f.multi_statement = statements > 1;
    f.statements = u32::try_from(statements).unwrap_or(u32::MAX);
    f.hints = std::mem::take(&mut lx.hints);
    let declared_read_only = f.kind == StatementKind::Transaction
        && f.starts_transaction == Some(TransactionAccess::ReadOnly);
    f.read_only = (matches!(f.kind, StatementKind::Select | StatementKind::Show)
        || declared_read_only)
        && !f.locking_read
        && !f.pins.contains(&PinReason::UserVariable)
        && !stmt_into(&f, &stmt)
        && !f.multi_statement;
    f.pins.sort_unstable();
    f.pins.dedup();
    if value_lists {
        collapse_value_lists(&mut digest);
    }
    f.digest = String::from_utf8(digest)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    f.digest_hash = digest_hash(&f.digest);
    f
}

/// Folds value lists in a digest to one shape, so ORM traffic does not make a digest per list
/// length: `IN(?, ?, ?)` becomes `IN(...)`, and `VALUES(?, ?), (?, ?)` keeps its first row.
/// One pass over the digest's `(`s (the common statement has a few).
fn collapse_value_lists(d: &mut Vec<u8>) {
    // The word before `(` at `open`, when it starts at a token boundary (`JOIN(` is not `IN(`).
    let word_before = |d: &[u8], open: usize, w: &[u8]| {
        d[..open].ends_with(w) && {
            let at = open - w.len();
            at == 0 || matches!(d[at - 1], b' ' | b'(' | b',')
        }
    };
    let mut open = 0;
    while let Some(p) = d[open..].iter().position(|&c| c == b'(') {
        open += p;
        if word_before(d, open, b"IN") {
            collapse_in_list(d, open);
        } else if word_before(d, open, b"VALUES") || word_before(d, open, b"VALUE") {
            collapse_rows(d, open);
        }
        open += 1;
    }
}

/// `(?, ?, ?)` at `open` (placeholders only) becomes `(...)`.
fn collapse_in_list(d: &mut Vec<u8>, open: usize) {
    let mut i = open + 1;
    let mut items = 0;
    while d.get(i) == Some(&b'?') {
        items += 1;
        i += 1;
        if d[i..].starts_with(b", ") {
            i += 2;
        } else {
            break;
        }
    }
    if items > 0 && d.get(i) == Some(&b')') {
        d.splice(open + 1..i, b"...".iter().copied());
    }
}

/// The row at `open` followed by `, ` and the same row again: the repeats go.
fn collapse_rows(d: &mut Vec<u8>, open: usize) {
    let Some(close) = d[open..].iter().position(|&c| c == b')').map(|p| p + open) else {
        return;
    };
    if d[open + 1..close].contains(&b'(') {
        return;
    }
    let len = close + 1 - open;
    let mut end = close + 1;
    while d[end..].starts_with(b", ")
        && d.len() >= end + 2 + len
        && d[end + 2..end + 2 + len] == d[open..=close]
    {
        end += 2 + len;
    }
    d.drain(close + 1..end);
}

/// The process-wide keyed hash of digests.
pub fn digest_hash(digest: &str) -> u64 {
    use std::hash::BuildHasher;
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(std::collections::hash_map::RandomState::new)
        .hash_one(digest)
}

fn stmt_into(_f: &QueryFacts, s: &StmtScan) -> bool {
    s.into && s.first == Some(StatementKind::Select)
}

/// A lexer at the same place, to look ahead without consuming.
fn lx_ahead<'a>(lx: &Lexer<'a>) -> Lexer<'a> {
    Lexer {
        s: lx.s,
        b: lx.b,
        i: lx.i,
        hints: Vec::new(),
    }
}

/// The next token's word, without consuming it.
fn lx_peek_word<'a>(lx: &Lexer<'a>) -> Option<Tok<'a>> {
    lx_ahead(lx).next_tok()
}

fn lx_peek_n<'a>(lx: &Lexer<'a>, n: usize) -> Vec<Tok<'a>> {
    let mut ahead = lx_ahead(lx);
    (0..n).map_while(|_| ahead.next_tok()).collect()
}

fn on_first_word(f: &mut QueryFacts, k: u128, second: Option<&Tok<'_>>, lx: &Lexer<'_>) {
    match k {
        kw::USE => f.changes_schema = true,
        kw::LOCK if is(second, kw::TABLES) || is(second, kw::TABLE) => {
            f.pins.push(PinReason::LockTables);
        }
        kw::PREPARE | kw::EXECUTE | kw::DEALLOCATE => f.pins.push(PinReason::TextPrepare),
        kw::XA => {
            f.pins.push(PinReason::XaTransaction);
            f.starts_transaction = Some(TransactionAccess::ReadWrite);
        }
        // `BEGIN NOT ATOMIC` is a compound statement, not a transaction.
        kw::BEGIN if !is(second, kw::NOT) => {
            f.starts_transaction = Some(TransactionAccess::ReadWrite);
        }
        kw::START if is(second, kw::TRANSACTION) => {
            let next = lx_peek_n(lx, 8);
            let read_only = next
                .windows(2)
                .any(|w| is(w.first(), kw::READ) && is(w.get(1), kw::ONLY));
            f.starts_transaction = Some(if read_only {
                TransactionAccess::ReadOnly
            } else {
                TransactionAccess::ReadWrite
            });
        }
        kw::HANDLER => f.pins.push(PinReason::Handler),
        kw::CREATE => {
            let next = lx_peek_n(lx, 3);
            if next.iter().any(|t| is(Some(t), kw::TEMPORARY)) {
                f.pins.push(PinReason::TemporaryTable);
            }
        }
        kw::KILL => {
            let next = lx_peek_n(lx, 2);
            let (query_only, id_tok) = match next.first() {
                Some(Tok::Word(_, kw::QUERY)) => (true, next.get(1)),
                Some(Tok::Word(_, kw::CONNECTION)) => (false, next.get(1)),
                other => (false, other),
            };
            if matches!(id_tok, Some(Tok::Num)) {
                // Re-scan the number text.
                let digits: String = lx.s[lx.i..]
                    .trim_start()
                    .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                    .trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(n) = digits.parse() {
                    f.kill = Some((query_only, Some(n)));
                }
            } else if is(id_tok, kw::CONNECTION_ID) {
                f.kill = Some((query_only, None));
            }
        }
        kw::LOAD => {
            let next = lx_peek_n(lx, 3);
            if next.iter().any(|t| is(Some(t), kw::LOCAL)) {
                f.local_infile = true;
            }
        }
        _ => {}
    }
}

fn on_word(
    f: &mut QueryFacts,
    w: &str,
    k: u128,
    prev: Option<&Tok<'_>>,
    prev2: Option<&Tok<'_>>,
    stmt: &mut StmtScan,
    lx: &Lexer<'_>,
) {
    match k {
        kw::WHERE => {
            if matches!(
                stmt.first,
                Some(StatementKind::Update | StatementKind::Delete)
            ) {
                f.has_where = true;
            }
        }
        LONG if w.eq_ignore_ascii_case("SQL_CALC_FOUND_ROWS") => {
            f.pins.push(PinReason::SqlCalcFoundRows);
        }
        kw::INTO => {
            stmt.into = true;
            // SELECT ... INTO @var / OUTFILE: not a pure read.
        }
        kw::UPDATE if is(prev, kw::FOR) => f.locking_read = true,
        kw::SHARE if is(prev, kw::FOR) || is(prev, kw::IN) => f.locking_read = true,
        kw::GET_LOCK => f.pins.push(PinReason::GetLock),
        kw::LAST_INSERT_ID | kw::ROW_COUNT | kw::FOUND_ROWS => {
            if matches!(lx_peek_word(lx), Some(Tok::Punct(b'('))) {
                f.needs_previous_connection = true;
                f.mentions_row_count |= k == kw::ROW_COUNT;
                f.mentions_found_rows |= k == kw::FOUND_ROWS;
            }
        }
        kw::WARNINGS | kw::ERRORS if is(prev, kw::SHOW) => f.needs_previous_connection = true,
        kw::CONNECTION_ID => {
            if matches!(lx_peek_word(lx), Some(Tok::Punct(b'('))) {
                f.mentions_connection_id = true;
            }
        }
        kw::TEMPORARY if is(prev, kw::CREATE) => f.pins.push(PinReason::TemporaryTable),
        _ => {
            if is_table_context(prev, prev2) && !is_keyword(k) {
                push_table(f, w, lx);
            }
        }
    }
}

fn is_table_context(prev: Option<&Tok<'_>>, prev2: Option<&Tok<'_>>) -> bool {
    is(prev, kw::FROM)
        || is(prev, kw::JOIN)
        || is(prev, kw::INTO)
        || is(prev, kw::UPDATE)
        || (is(prev, kw::TABLE) && !is(prev2, kw::LOCK))
        || is(prev, kw::TABLES)
}

fn is_keyword(u: u128) -> bool {
    matches!(
        u,
        kw::SELECT
            | kw::LOW_PRIORITY
            | kw::IGNORE
            | kw::DUAL
            | kw::IF
            | kw::EXISTS
            | kw::NOT
            | kw::OUTFILE
            | kw::DUMPFILE
            | kw::LATERAL
            | kw::QUICK
            | kw::DELAYED
            | kw::HIGH_PRIORITY
    )
}

fn push_table(f: &mut QueryFacts, name: &str, lx: &Lexer<'_>) {
    // schema.table: join with the following `.name` (a word, `quoted` or "double-quoted").
    let mut ahead = lx_ahead(lx);
    let full = match (ahead.next_tok(), ahead.next_tok()) {
        (Some(Tok::Punct(b'.')), Some(Tok::Word(t, _) | Tok::Quoted(t) | Tok::DoubleQuoted(t))) => {
            format!("{name}.{t}")
        }
        _ => name.to_string(),
    };
    if !f.tables.contains(&full) && f.tables.len() < 64 {
        f.tables.push(full);
    }
}

/// The start of a SET statement: NAMES / CHARACTER SET / TRANSACTION forms.
fn scan_set_start(f: &mut QueryFacts, lx: &Lexer<'_>) {
    let next = lx_peek_n(lx, 3);
    let w = |i: usize, keyword: u128| is(next.get(i), keyword);
    if w(0, kw::NAMES) || (w(0, kw::CHARACTER) && w(1, kw::SET)) || w(0, kw::CHARSET) {
        f.set_targets.push(SetTarget::Names);
    } else if w(0, kw::TRANSACTION) {
        f.pins.push(PinReason::NextTransactionCharacteristics);
    } else if (w(0, kw::SESSION) || w(0, kw::LOCAL)) && w(1, kw::TRANSACTION) {
        f.set_targets
            .push(SetTarget::Session("tx_isolation".into()));
        f.set_targets
            .push(SetTarget::Session("tx_read_only".into()));
    } else if w(0, kw::GLOBAL) {
        // Global changes are not session state; nothing to replay.
    } else if w(0, kw::PASSWORD) || w(0, kw::ROLE) || w(0, kw::STATEMENT) || w(0, kw::DEFAULT) {
        f.pins.push(PinReason::UnparsedSet);
    }
}

fn record_set_target(f: &mut QueryFacts, w: &str, k: u128, lx: &Lexer<'_>) {
    match k {
        kw::SESSION | kw::LOCAL => {
            // `SET SESSION x = ...`: the name is the next word; take it now.
            if let Some(Tok::Word(n, k)) = lx_peek_word(lx)
                && k != kw::TRANSACTION
            {
                f.set_targets
                    .push(SetTarget::Session(n.to_ascii_lowercase()));
            }
        }
        kw::GLOBAL
        | kw::NAMES
        | kw::CHARACTER
        | kw::CHARSET
        | kw::TRANSACTION
        | kw::PASSWORD
        | kw::ROLE
        | kw::STATEMENT
        | kw::DEFAULT => {}
        _ => f
            .set_targets
            .push(SetTarget::Session(w.to_ascii_lowercase())),
    }
}

/// Appends a token to the digest. The digest is built as bytes from pieces of the (valid UTF-8)
/// statement cut at character boundaries and ASCII, so it stays valid UTF-8.
fn push_digest(d: &mut Vec<u8>, t: &Tok<'_>, prev: Option<&Tok<'_>>) {
    let glued = matches!(t, Tok::Punct(b',' | b')' | b'.' | b';'))
        || matches!(prev, Some(Tok::Punct(b'(' | b'.')))
        || (matches!(t, Tok::Punct(b'(')) && matches!(prev, Some(Tok::Word(..))));
    let needs_space = !d.is_empty() && !glued;
    if needs_space {
        d.push(b' ');
    }
    match t {
        Tok::Word(w, k) if *k != LONG => {
            // A plain word of up to 16 bytes: its key is the word upper-cased. Copy all 16
            // bytes (one fixed-size store) and keep the word's length.
            let len = d.len() + w.len();
            d.extend_from_slice(&k.to_le_bytes());
            d.truncate(len);
        }
        Tok::Word(w, _) => {
            let start = d.len();
            d.extend_from_slice(w.as_bytes());
            if w.bytes().all(|c| c.is_ascii_alphabetic() || c == b'_') && w.len() < 24 {
                d[start..].make_ascii_uppercase();
            }
        }
        Tok::Quoted(w) => {
            d.push(b'`');
            d.extend_from_slice(w.as_bytes());
            d.push(b'`');
        }
        Tok::Str | Tok::DoubleQuoted(_) | Tok::Num | Tok::Placeholder => {
            // Fold `-` of a negative number into the literal.
            if matches!(prev, Some(Tok::Punct(b'-'))) && d.ends_with(b"- ") {
                d.truncate(d.len() - 2);
                if !(d.is_empty() || matches!(d.last(), Some(b' ' | b'(' | b'.'))) {
                    d.push(b' ');
                }
            }
            d.push(b'?');
        }
        Tok::UserVar => d.extend_from_slice(b"@?"),
        Tok::SysVar(n) => {
            d.extend_from_slice(b"@@");
            d.extend_from_slice(n.as_bytes());
        }
        Tok::Punct(c) => {
            let mut buf = [0u8; 4];
            let ch = char::from(*c).to_ascii_uppercase();
            d.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_transactions_and_their_access_mode() {
        let rw = Some(TransactionAccess::ReadWrite);
        let ro = Some(TransactionAccess::ReadOnly);
        for (sql, want) in [
            ("BEGIN", rw),
            ("begin work", rw),
            ("START TRANSACTION", rw),
            ("START TRANSACTION READ WRITE", rw),
            ("START TRANSACTION WITH CONSISTENT SNAPSHOT", rw),
            ("START TRANSACTION READ ONLY", ro),
            ("start transaction with consistent snapshot, read only", ro),
            ("XA START 'x'", rw),
            ("BEGIN NOT ATOMIC SELECT 1; END", None),
            ("SELECT 1", None),
            ("COMMIT", None),
        ] {
            assert_eq!(analyze(sql).starts_transaction, want, "{sql}");
        }
        assert!(analyze("START TRANSACTION READ ONLY").read_only);
        assert!(!analyze("START TRANSACTION").read_only);
    }

    #[test]
    fn kinds_and_reads() {
        let f = analyze("SELECT * FROM t WHERE id = 5");
        assert_eq!(f.kind, StatementKind::Select);
        assert!(f.read_only);
        assert_eq!(f.tables, vec!["t".to_string()]);
        let f = analyze("select * from app.t for update");
        assert!(f.locking_read && !f.read_only);
        assert_eq!(f.tables, vec!["app.t".to_string()]);
        assert_eq!(
            analyze("  /* x */ insert into t values (1)").kind,
            StatementKind::Insert
        );
        assert_eq!(
            analyze("START TRANSACTION").kind,
            StatementKind::Transaction
        );
        assert_eq!(
            analyze("(SELECT 1) UNION (SELECT 2)").kind,
            StatementKind::Select
        );
        assert!(analyze("UPDATE t SET a = 1 WHERE b = 2").has_where);
        assert!(!analyze("DELETE FROM t").has_where);
        assert!(analyze("SELECT 1; SELECT 2").multi_statement);
        assert!(!analyze("SELECT 1;").multi_statement);
        let procedure = "CREATE PROCEDURE p1() BEGIN SELECT 1 FROM DUAL; SELECT 2 FROM DUAL; END";
        assert!(!analyze(procedure).multi_statement);
        assert!(!analyze("CREATE DEFINER=CURRENT_USER TRIGGER t BEFORE INSERT ON x FOR EACH ROW BEGIN SET NEW.a = 1; SET NEW.b = 2; END").multi_statement);
        assert!(!analyze("BEGIN NOT ATOMIC SELECT 1; SELECT 2; END").multi_statement);
        assert!(!analyze("IF 1 THEN SELECT 1; ELSE SELECT 2; END IF").multi_statement);
        assert!(analyze("CREATE TABLE t (a INT); SELECT 1").multi_statement);
        assert!(analyze("SELECT IF(1, 2, 3); SELECT 2").multi_statement);
        let f = analyze("SELECT 1; CALL p(); DO 1; BEGIN NOT ATOMIC SELECT 1; END");
        assert_eq!((f.statements, f.calls), (4, 0b1010));
        assert_eq!(analyze(procedure).calls, 0);
    }

    #[test]
    fn tables_in_any_quoting() {
        for sql in [
            "SELECT * FROM mysql.user",
            "SELECT * FROM `mysql`.`user`",
            "SELECT * FROM \"mysql\".\"user\"",
            "SELECT * FROM mysql . user",
            "SELECT * FROM mysql.\"user\" WHERE a = \"x\"",
        ] {
            assert_eq!(analyze(sql).tables, vec!["mysql.user".to_string()], "{sql}");
        }
        assert_eq!(
            analyze("SELECT * FROM `my db`.`odd table`").tables,
            vec!["my db.odd table".to_string()]
        );
        // A double-quoted name keeps its text in the digest (it is not a literal), so per-digest
        // caches tell the tables apart; a double-quoted string elsewhere is a literal.
        assert_ne!(
            analyze("SELECT * FROM \"mysql\".\"user\"").digest,
            analyze("SELECT * FROM \"app\".\"user\"").digest
        );
        assert_eq!(
            analyze("SELECT \"a\" FROM t").digest,
            analyze("SELECT 'b' FROM t").digest
        );
    }

    #[test]
    fn digests_fold_value_lists_to_one_shape() {
        let one = analyze("SELECT * FROM t WHERE id IN (1)").digest;
        assert_eq!(one, "SELECT * FROM T WHERE ID IN(...)");
        assert_eq!(analyze("select * from t where id in (1, 2, 3)").digest, one);
        assert_eq!(
            analyze("SELECT * FROM t WHERE id NOT IN (1,2) AND b IN (SELECT x FROM u)").digest,
            "SELECT * FROM T WHERE ID NOT IN(...) AND B IN(SELECT X FROM U)"
        );
        let row = analyze("INSERT INTO t (a, b) VALUES (1, 'x')").digest;
        assert_eq!(row, "INSERT INTO T(A, B) VALUES(?, ?)");
        assert_eq!(
            analyze("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y'),(3,'z')").digest,
            row
        );
        assert_eq!(
            analyze("INSERT INTO t VALUES (1), (2) ON DUPLICATE KEY UPDATE a = VALUES(a)").digest,
            "INSERT INTO T VALUES(?) ON DUPLICATE KEY UPDATE A = VALUES(A)"
        );
        // Function arguments are not value lists.
        assert_eq!(analyze("SELECT f(1, -2)").digest, "SELECT F(?, ?)");
        assert_eq!(analyze("SELECT JOIN(1)").digest, "SELECT JOIN(?)");
    }

    #[test]
    fn digests_fold_literals_and_whitespace() {
        let a = analyze("SELECT  * FROM t WHERE a = 5 AND b = 'x' -- c\n");
        let b = analyze("select * from t where a = 77 and b = \"yy\"");
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.digest, "SELECT * FROM T WHERE A = ? AND B = ?");
        assert_eq!(analyze("SELECT f(1, -2)").digest, "SELECT F(?, ?)");
    }

    #[test]
    fn session_effects() {
        assert_eq!(analyze("SET @a = 1").pins, vec![PinReason::UserVariable]);
        assert_eq!(analyze("SELECT @a").pins, vec![PinReason::UserVariable]);
        assert_eq!(
            analyze("CREATE TEMPORARY TABLE t (a int)").pins,
            vec![PinReason::TemporaryTable]
        );
        assert_eq!(
            analyze("SELECT GET_LOCK('x', 1)").pins,
            vec![PinReason::GetLock]
        );
        assert_eq!(
            analyze("LOCK TABLES t WRITE").pins,
            vec![PinReason::LockTables]
        );
        assert_eq!(
            analyze("SELECT SQL_CALC_FOUND_ROWS * FROM t").pins,
            vec![PinReason::SqlCalcFoundRows]
        );
        assert_eq!(
            analyze("PREPARE s FROM 'SELECT 1'").pins,
            vec![PinReason::TextPrepare]
        );
        assert!(analyze("SET sql_mode = 'ANSI'").pins.is_empty());
        assert_eq!(
            analyze("SET SESSION sql_mode = 'ANSI', @@time_zone = '+00:00', autocommit=0")
                .set_targets,
            vec![
                SetTarget::Session("sql_mode".into()),
                SetTarget::Session("time_zone".into()),
                SetTarget::Session("autocommit".into())
            ]
        );
        assert_eq!(
            analyze("SET NAMES utf8mb4 COLLATE utf8mb4_bin").set_targets,
            vec![SetTarget::Names]
        );
        assert_eq!(
            analyze("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").pins,
            vec![PinReason::NextTransactionCharacteristics]
        );
        assert!(analyze("SELECT LAST_INSERT_ID()").needs_previous_connection);
        assert!(analyze("SHOW WARNINGS").needs_previous_connection);
        assert!(analyze("SELECT CONNECTION_ID()").mentions_connection_id);
        assert!(analyze("SELECT row_count ()").mentions_row_count);
        assert!(!analyze("SELECT row_count FROM t").mentions_row_count);
        assert!(analyze("SELECT FOUND_ROWS()").mentions_found_rows);
        assert_eq!(analyze("KILL QUERY 42").kill, Some((true, Some(42))));
        assert_eq!(analyze("KILL 7").kill, Some((false, Some(7))));
        assert_eq!(analyze("KILL CONNECTION_ID()").kill, Some((false, None)));
        assert!(analyze("LOAD DATA LOCAL INFILE 'x' INTO TABLE t").local_infile);
        assert_eq!(
            analyze("/* sluice:route=primary */ SELECT 1").hints,
            vec![("route".into(), "primary".into())]
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in [
            "'",
            "\"abc",
            "/*",
            "/*!",
            "`x",
            "@",
            "@@",
            "x'",
            "-- ",
            "é'ü",
            "SELECT 'é",
            "1e+",
            "KILL QUERY",
        ] {
            let _ = analyze(s);
        }
    }

    /// A small deterministic generator (xorshift) for the property tests below.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn literal(&mut self) -> String {
            match self.next() % 5 {
                0 => (self.next() % 100_000).to_string(),
                1 => format!("-{}.{}", self.next() % 1000, self.next() % 100),
                2 => format!("'{}'", "x''y\\z".repeat((self.next() % 3) as usize)),
                3 => format!("\"{}\"", self.next()),
                _ => format!("X'{:x}'", self.next()),
            }
        }
    }

    #[test]
    fn property_statements_differing_only_in_literals_share_a_digest() {
        let shapes = [
            "SELECT a, b FROM t WHERE a = {} AND b IN ({}, {})",
            "UPDATE t SET c = {} WHERE id = {}",
            "INSERT INTO t (a, b) VALUES ({}, {})",
            "SELECT * FROM t WHERE name LIKE {} LIMIT {}",
            "DELETE FROM t WHERE a > {} OR b < {}",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let shape = shapes[(rng.next() % shapes.len() as u64) as usize];
            let fill = |rng: &mut Rng| {
                let mut out = String::new();
                let mut parts = shape.split("{}");
                out.push_str(parts.next().unwrap_or_default());
                for p in parts {
                    out.push_str(&rng.literal());
                    out.push_str(p);
                }
                out
            };
            let (a, b) = (fill(&mut rng), fill(&mut rng));
            assert_eq!(analyze(&a).digest, analyze(&b).digest, "{a} / {b}");
        }
    }

    #[test]
    fn property_the_lexer_never_panics_on_arbitrary_bytes() {
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let alphabet = b"SELECT FROM WHERE'\"`@/*-#;()?0123456789xX.\\\n \t\xc3\xa9\xff";
        for _ in 0..20_000 {
            let len = (rng.next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            let _ = analyze(&String::from_utf8_lossy(&bytes));
        }
    }
}
