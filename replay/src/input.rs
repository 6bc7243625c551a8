//! The pipeline's inputs and file output over the library's capture module: capture files read
//! as they are sent, or preloaded into memory (`-K`), and the pcap writer of `-w`.

use crate::pipeline::{Input, Output};
use anyhow::Result;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;
use tcpclone::capture::{CaptureReader, Packet, PacketSource, PcapWriter, PreloadedCapture};

/// Capture files read from disk while sending; memory stays flat in the files' size.
pub struct FileInput {
    paths: Vec<PathBuf>,
    reader: Option<CaptureReader<std::io::BufReader<File>>>,
}

impl FileInput {
    /// Reads `paths` in order.
    pub fn new(paths: Vec<PathBuf>) -> Self {
        FileInput {
            paths,
            reader: None,
        }
    }
}

impl Input for FileInput {
    fn files(&self) -> usize {
        self.paths.len()
    }
    fn open(&mut self, index: usize) -> Result<()> {
        self.reader = Some(CaptureReader::open(&self.paths[index])?);
        Ok(())
    }
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>> {
        match &mut self.reader {
            Some(r) => Ok(r.next_packet()?),
            None => Ok(None),
        }
    }
}

/// One preloaded file: every whole record, and the error that cut it short (if any).
pub struct Preloaded {
    /// The packets.
    pub capture: PreloadedCapture,
    /// Why reading stopped early, reported after the last whole record is sent.
    pub error: Option<String>,
}

/// Loads every file into memory (`-K`). A file cut short keeps its whole records; its error is
/// reported when the replay reaches the cut. A file that cannot be opened fails here.
pub fn preload(paths: &[PathBuf]) -> Result<Arc<Vec<Preloaded>>> {
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let mut r = CaptureReader::open(p)?;
        let (mut capture, err) = PreloadedCapture::load_partial(&mut r);
        capture.shrink_to_fit();
        out.push(Preloaded {
            capture,
            error: err.map(|e| e.to_string()),
        });
    }
    Ok(Arc::new(out))
}

/// Replays preloaded files; cheap to clone for several sender threads.
#[derive(Clone)]
pub struct PreloadInput {
    files: Arc<Vec<Preloaded>>,
    file: usize,
    next: usize,
}

impl PreloadInput {
    /// Replays `files` (from [`preload`]).
    pub fn new(files: Arc<Vec<Preloaded>>) -> Self {
        PreloadInput {
            files,
            file: 0,
            next: 0,
        }
    }
}

impl Input for PreloadInput {
    fn files(&self) -> usize {
        self.files.len()
    }
    fn open(&mut self, index: usize) -> Result<()> {
        self.file = index;
        self.next = 0;
        Ok(())
    }
    fn next_packet(&mut self) -> Result<Option<Packet<'_>>> {
        let f = &self.files[self.file];
        match f.capture.get(self.next) {
            Some(p) => {
                self.next += 1;
                Ok(Some(p))
            }
            None => match &f.error {
                Some(e) if self.next == f.capture.len() => {
                    self.next += 1;
                    Err(anyhow::anyhow!("{e}"))
                }
                _ => Ok(None),
            },
        }
    }
}

/// `-w FILE`: the pcap writer as the pipeline's output.
pub type FileOutput = PcapWriter<BufWriter<File>>;

impl Output for PcapWriter<BufWriter<File>> {}
