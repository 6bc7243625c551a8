//! The pipeline's inputs and file output over the library's capture module: capture files read
//! as they are sent, or preloaded into memory (`-K`), and the pcap writer of `-w`.

use crate::pipeline::{Input, Output};
use anyhow::Result;
use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use tcpclone::capture::{CaptureReader, Packet, PacketSource, PcapWriter, PreloadedCapture};

/// Capture files read from disk while sending; memory stays flat in the files' size.
///
/// Every file is opened when the input is made, so that the process can give up the
/// privileges that opened them (a root-only capture directory) before it sends; each pass
/// (`--loop`) reads the same open file again from its start.
pub struct FileInput {
    files: Vec<(PathBuf, File)>,
    reader: Option<CaptureReader<BufReader<File>>>,
}

impl FileInput {
    /// Opens `paths` now, to be read in order. Each call opens its own descriptions, so inputs
    /// of different sender threads never share a file offset.
    pub fn open_all(paths: &[PathBuf]) -> Result<Self> {
        let files = paths
            .iter()
            .map(|p| {
                File::open(p)
                    .map(|f| (p.clone(), f))
                    .map_err(|e| anyhow::anyhow!("{}: cannot open: {e}", p.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FileInput {
            files,
            reader: None,
        })
    }
}

impl Input for FileInput {
    fn files(&self) -> usize {
        self.files.len()
    }
    fn open(&mut self, index: usize) -> Result<()> {
        let (path, file) = &self.files[index];
        // A second handle on the same open file: rewinding it rewinds the one we keep, which
        // no other reader uses (the previous pass's reader is replaced right here).
        let mut f = file.try_clone()?;
        f.seek(SeekFrom::Start(0))?;
        self.reader = Some(CaptureReader::from_reader(
            BufReader::with_capacity(1 << 18, f),
            path.display().to_string(),
        )?);
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
pub struct PreloadedFile {
    /// The packets.
    pub capture: PreloadedCapture,
    /// Why reading stopped early, reported after the last whole record is sent.
    pub error: Option<String>,
}

/// Loads every file into memory (`-K`). A file cut short keeps its whole records; its error is
/// reported when the replay reaches the cut. A file that cannot be opened fails here.
pub fn preload(paths: &[PathBuf]) -> Result<Arc<Vec<PreloadedFile>>> {
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let mut r = CaptureReader::open(p)?;
        let (mut capture, err) = PreloadedCapture::load_partial(&mut r);
        capture.shrink_to_fit();
        out.push(PreloadedFile {
            capture,
            error: err.map(|e| e.to_string()),
        });
    }
    Ok(Arc::new(out))
}

/// Replays preloaded files; cheap to clone for several sender threads.
#[derive(Clone)]
pub struct PreloadInput {
    files: Arc<Vec<PreloadedFile>>,
    file: usize,
    next: usize,
}

impl PreloadInput {
    /// Replays `files` (from [`preload`]).
    pub fn new(files: Arc<Vec<PreloadedFile>>) -> Self {
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
