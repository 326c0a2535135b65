//! What a tokio user writes: one task listening to two buses and a timer
//! at once with `tokio::select!`, while another task broadcasts.
//!
//! ```text
//! cargo run --features tokio --example tokio_select [-- BUS_A BUS_B]
//! ```
//!
//! Without arguments it creates two random buses, feeds them from a task
//! of its own and removes them at the end; with two bus pathnames it
//! listens to those (broadcast with `bus broadcast PATH MESSAGE`). It ends
//! after five ticks of one second.

use std::time::Duration;

use bus::tokio::{subscribe, AsyncWriter, StreamOptions};
use bus::{Error, Message, Overflow};

#[tokio::main]
async fn main() -> bus::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let own = args.len() != 2;
    let (a, b) = match own {
        true => (bus::create(None, false)?, bus::create(None, false)?),
        false => (args[0].clone().into(), args[1].clone().into()),
    };
    let result = listen(&a, &b, own).await;
    if own {
        bus::unlink(&a)?;
        bus::unlink(&b)?;
    }
    result
}

async fn listen(a: &std::path::Path, b: &std::path::Path, feed: bool) -> bus::Result<()> {
    // Alerts must not be lost: when 64 wait, writers on that bus wait too.
    let mut alerts = subscribe(
        a,
        StreamOptions {
            capacity: 64,
            overflow: Overflow::Hold,
        },
    )
    .await?;
    // Telemetry may be lost: when 16 wait, the rest is dropped and counted.
    let mut telemetry = subscribe(
        b,
        StreamOptions {
            capacity: 16,
            overflow: Overflow::Drop,
        },
    )
    .await?;
    // Both streams are counted on their buses now: nothing sent from here
    // on is missed.
    if feed {
        let (a, b) = (AsyncWriter::open(a).await?, AsyncWriter::open(b).await?);
        tokio::spawn(async move {
            for i in 0u64.. {
                let m = Message::new(format!("{} reading {i}", std::process::id()))?;
                // A broadcast that cannot be made within 100 ms is given up:
                // unpublished if the bus was busy, else finished in the
                // background.
                b.write_timed(&m, Duration::from_millis(100)).await?;
                if i % 10 == 0 {
                    a.write(&Message::from_this_process(&format!("alert {i}"))?)
                        .await?;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<(), Error>(())
        });
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut ticks, mut readings) = (0, 0u64);
    loop {
        // `recv` is cancel safe: a branch that loses the race loses no
        // message, the next turn of the loop gets it.
        tokio::select! {
            alert = alerts.recv() => match alert {
                Some(m) => println!("alert: {}", String::from_utf8_lossy(&m?)),
                None => break,
            },
            reading = telemetry.recv() => match reading {
                Some(Ok(_)) => readings += 1,
                Some(Err(Error::Missed { count })) => println!("telemetry: {count} missed"),
                Some(Err(e)) => return Err(e),
                None => break,
            },
            _ = tick.tick() => {
                println!("tick: {readings} readings so far");
                ticks += 1;
                if ticks > 5 {
                    break;
                }
            }
        }
    }
    Ok(())
    // Dropping the streams leaves both buses.
}
