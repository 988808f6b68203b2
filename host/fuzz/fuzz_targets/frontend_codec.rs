//! Fuzzes everything the gateway decodes from a client: the handshake response, commands,
//! COM_STMT_EXECUTE bodies, long data as the session holds it, and packet framing (commands,
//! and a LOAD DATA LOCAL file's packets mid-command). Nothing may panic, and the long data held
//! always adds up.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::protocol::command::Command;
use sluice::protocol::handshake::ClientHello;
use sluice::protocol::resultset::ExecuteBody;
use sluice::session::long_data::{LongData, LongDataHeld, LongDataLimits};

fuzz_target!(|data: &[u8]| {
    let _ = ClientHello::decode(data);
    let caps = data.get(..4).map_or(0, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let packet = Bytes::copy_from_slice(data);
    let n = usize::from(data.first().copied().unwrap_or(0) % 16);
    match Command::decode(&packet, caps) {
        Ok(Command::StmtExecute { body, .. }) => {
            if let Ok(b) = ExecuteBody::decode(&body, n) {
                let types = b.new_types.map_or_else(|| vec![0xfd; n * 2], <[u8]>::to_vec);
                let mut out = Vec::new();
                b.encode(&mut out, if n == 0 { &[] } else { &types });
            }
        }
        Ok(Command::StmtSendLongData { .. }) => long_data(data),
        _ => {}
    }
    // Framing: the bytes as a stream of packets, plain and inside compressed frames, from a
    // command's start; and as a file's packets after the gateway's request (sequence 2), read
    // to the empty packet as the LOAD DATA relay does.
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    for (compressed, seq) in [(false, 0), (true, 0), (false, 2)] {
        rt.block_on(async {
            let (mut a, b) = tokio::io::duplex(data.len().max(1) + 16);
            use tokio::io::AsyncWriteExt;
            let _ = a.write_all(data).await;
            drop(a);
            let mut s = sluice::protocol::PacketStream::from_parts(b, Default::default(), seq, 1 << 20);
            if compressed {
                s.enable_compression();
            }
            for _ in 0..64 {
                match s.read_packet().await {
                    Ok(p) if seq == 2 && p.is_empty() => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
    }
});

/// The bytes as a run of COM_STMT_SEND_LONG_DATA chunks, resets and executes on four
/// statements under small bounds.
fn long_data(data: &[u8]) {
    let mut held = LongDataHeld::new(LongDataLimits {
        per_parameter: 64,
        per_session: 160,
    });
    let mut stmts: Vec<LongData> = (0..4).map(LongData::new).collect();
    let mut ops = data.iter().copied();
    while let (Some(op), Some(arg)) = (ops.next(), ops.next()) {
        let s = usize::from(op & 3);
        match op >> 6 {
            0 | 1 => {
                let len = usize::from(arg & 0x3f);
                let chunk: Vec<u8> = ops.by_ref().take(len).collect();
                held.append(&mut stmts[s], u16::from(arg >> 6), &chunk);
            }
            2 => held.reset(&mut stmts[s]),
            _ => {
                let _ = held.take(&mut stmts[s]);
            }
        }
        let total: usize = stmts.iter().map(LongData::held).sum();
        assert_eq!(held.held(), total, "the session's account of long data drifted");
        assert!(total <= 160, "more than the session may hold");
    }
}
