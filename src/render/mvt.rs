//! A tile's MVT bytes as they arrive from the server, in pieces for large tiles.

use futures::TryStreamExt;
use tokio_postgres::{Row, RowStream};

/// A tile's MVT bytes where they arrived: in the result rows, piece by piece, so a tile of tens of
/// megabytes is never copied into one buffer before it is compressed. A large tile's later pieces
/// may still be arriving when it is handed on (see [`Mvt::for_each_piece`]).
#[derive(Debug, Default)]
pub struct Mvt {
    pub(super) held: Vec<Piece>,
    /// The pieces after the held ones, in order, while they arrive; closed after the last.
    pub(super) arriving: Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
}

#[derive(Debug)]
pub(super) enum Piece {
    Row(Row),
    Bytes(Vec<u8>),
}

/// Column of the MVT piece in a tile statement's rows.
const CHUNK_COLUMN: usize = 3;

/// Pieces of a large tile that may wait between the statement's rows and whoever takes them:
/// enough that reading rows and compressing overlap, few enough that a tile of 100 MB is never
/// held whole.
pub(super) const ARRIVING_PIECES: usize = 2;

impl Piece {
    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Piece::Row(row) => row.get::<_, &[u8]>(CHUNK_COLUMN),
            Piece::Bytes(bytes) => bytes.as_slice(),
        }
    }
}

impl Mvt {
    /// Bytes made elsewhere (a renderer that does not read rows, such as a test's).
    #[cfg(test)]
    pub fn from_bytes(bytes: Vec<u8>) -> Mvt {
        Mvt::from_pieces(vec![bytes])
    }

    /// Pieces made elsewhere, in order (a test's).
    pub fn from_pieces(pieces: Vec<Vec<u8>>) -> Mvt {
        Mvt {
            held: pieces.into_iter().map(Piece::Bytes).collect(),
            arriving: None,
        }
    }

    /// Held pieces followed by the pieces `arriving` will bring (a test's, or a large tile's).
    pub fn arriving(pieces: Vec<Vec<u8>>, arriving: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Mvt {
        Mvt {
            arriving: Some(arriving),
            ..Mvt::from_pieces(pieces)
        }
    }

    /// The bytes, when they arrived in one piece: compressed from where they lie, with no copy.
    pub fn single(&self) -> Option<&[u8]> {
        match (self.held.as_slice(), &self.arriving) {
            ([piece], None) => Some(piece.bytes()),
            _ => None,
        }
    }

    /// Whether more pieces are still to arrive: taking them blocks (see [`Mvt::for_each_piece`]).
    pub fn is_arriving(&self) -> bool {
        self.arriving.is_some()
    }

    /// Hands every piece to `take`, in order, releasing each before the next arrives. Waits for
    /// arriving pieces, so it must not run on an async task when [`Mvt::is_arriving`].
    pub fn for_each_piece(self, mut take: impl FnMut(&[u8])) {
        for piece in &self.held {
            take(piece.bytes());
        }
        drop(self.held);
        if let Some(mut arriving) = self.arriving {
            while let Some(piece) = arriving.blocking_recv() {
                take(&piece);
            }
        }
    }

    /// The bytes in one buffer (for outputs that store tiles uncompressed).
    pub fn into_bytes(self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len());
        self.for_each_piece(|piece| bytes.extend_from_slice(piece));
        bytes
    }

    /// Length in bytes of the pieces held (all of them unless [`Mvt::is_arriving`]).
    pub fn len(&self) -> usize {
        self.held.iter().map(|piece| piece.bytes().len()).sum()
    }

    /// Whether the tile holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && !self.is_arriving()
    }

    /// Releases the bytes once they are encoded.
    pub fn take(&mut self) -> Mvt {
        std::mem::take(self)
    }
}

/// Sends a large tile's pieces, from `second` on, to whoever takes them as they arrive; returns the
/// first row of the next tile (or the end) and the server's clock at the last piece. The pieces are
/// copied out of their rows: a row keeps the whole read buffer it arrived in, about twice the piece.
/// When the taker is gone (it failed, or only probes), the pieces are read and dropped.
pub(super) async fn pass_pieces(
    second: Row,
    mut rows: std::pin::Pin<&mut RowStream>,
    sender: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> std::result::Result<(Option<Row>, f64), tokio_postgres::Error> {
    let mut row = second;
    loop {
        let done: f64 = row.get(5);
        // An error only means the taker is gone; the rows must still be read to the end.
        let _ = sender
            .send(row.get::<_, &[u8]>(CHUNK_COLUMN).to_vec())
            .await;
        match rows.try_next().await? {
            Some(next) if next.get::<_, i32>(2) > 0 => row = next,
            after => return Ok((after, done)),
        }
    }
}
