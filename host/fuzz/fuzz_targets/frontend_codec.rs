//! Fuzzes everything the gateway decodes from a client: the handshake response, commands,
//! COM_STMT_EXECUTE parameters, and packet framing. Nothing may panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::protocol::command::Command;
use sluice::protocol::handshake::ClientHello;
use sluice::protocol::resultset::decode_execute_params;

fuzz_target!(|data: &[u8]| {
    let _ = ClientHello::decode(data);
    let caps = data.get(..4).map_or(0, |c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    let packet = Bytes::copy_from_slice(data);
    if let Ok(Command::StmtExecute { body, .. }) = Command::decode(&packet, caps) {
        let n = usize::from(data.first().copied().unwrap_or(0) % 16);
        let mut types = Vec::new();
        let mut long = vec![None; n];
        let _ = decode_execute_params(&body, n, &mut types, &mut long);
        let _ = decode_execute_params(&body, n, &mut types, &mut long);
    }
    // Framing: the bytes as a stream of packets, plain and inside compressed frames.
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    for compressed in [false, true] {
        rt.block_on(async {
            let (mut a, b) = tokio::io::duplex(data.len().max(1) + 16);
            use tokio::io::AsyncWriteExt;
            let _ = a.write_all(data).await;
            drop(a);
            let mut s = sluice::protocol::PacketStream::new(b, 1 << 20);
            if compressed {
                s.enable_compression();
            }
            for _ in 0..64 {
                if s.read_packet().await.is_err() {
                    break;
                }
            }
        });
    }
});
