//! The socket table: one slot per core slab key, holding the socket and the generation of
//! the client it belongs to, so an id of a departed client never reaches a new socket.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::core::ClientId;

/// A socket and the generation of the client it belongs to.
struct Slot {
    generation: u32,
    stream: TcpStream,
    /// Registered for writable readiness too. Sockets start with read interest only: a client
    /// that keeps up never fills its socket, and watching EPOLLOUT would cost an epoll wake-up
    /// for every ACK it sends. Interest is added the first time a write would block.
    watching_writable: bool,
}

/// Every client socket, indexed by slab key.
#[derive(Default)]
pub(super) struct Sockets {
    slots: Vec<Option<Slot>>,
}

impl Sockets {
    /// Registers `stream` (readable only) as client `id`'s socket. A socket still in the
    /// slot (its client was evicted and its `Close` is still queued) is deregistered and
    /// dropped first; the stale `Close` is then ignored.
    pub(super) fn insert(
        &mut self,
        registry: &Registry,
        id: ClientId,
        mut stream: TcpStream,
    ) -> io::Result<()> {
        let key = id.key as usize;
        if self.slots.len() <= key {
            self.slots.resize_with(key + 1, || None);
        }
        if let Some(mut stale) = self.slots[key].take() {
            let _ = registry.deregister(&mut stale.stream);
        }
        registry.register(&mut stream, Token(key), Interest::READABLE)?;
        self.slots[key] = Some(Slot {
            generation: id.generation,
            stream,
            watching_writable: false,
        });
        Ok(())
    }

    fn slot(&self, id: ClientId) -> Option<&Slot> {
        match self.slots.get(id.key as usize) {
            Some(Some(slot)) if slot.generation == id.generation => Some(slot),
            _ => None,
        }
    }

    fn slot_mut(&mut self, id: ClientId) -> Option<&mut Slot> {
        match self.slots.get_mut(id.key as usize) {
            Some(Some(slot)) if slot.generation == id.generation => Some(slot),
            _ => None,
        }
    }

    /// True while the table holds `id`'s socket.
    pub(super) fn holds(&self, id: ClientId) -> bool {
        self.slot(id).is_some()
    }

    /// Reads once from `id`'s socket; `None` when the table does not hold it.
    pub(super) fn read(&mut self, id: ClientId, buf: &mut [u8]) -> Option<io::Result<usize>> {
        self.slot_mut(id).map(|s| s.stream.read(buf))
    }

    /// One `writev` to `id`'s socket; `None` when the table does not hold it.
    pub(super) fn write(&self, id: ClientId, iov: &[IoSlice<'_>]) -> Option<io::Result<usize>> {
        self.slot(id).map(|s| (&s.stream).write_vectored(iov))
    }

    /// A write would block: adds writable interest so that an event comes when there is
    /// room (EPOLL_CTL_MOD re-checks readiness: if room appeared meanwhile, the event is
    /// reported). Does nothing if already watching or the socket is gone.
    pub(super) fn watch_writable(&mut self, registry: &Registry, id: ClientId) -> io::Result<()> {
        let Some(slot) = self.slot_mut(id) else {
            return Ok(());
        };
        if !slot.watching_writable {
            let interest = Interest::READABLE | Interest::WRITABLE;
            registry.reregister(&mut slot.stream, Token(id.key as usize), interest)?;
            slot.watching_writable = true;
        }
        Ok(())
    }

    /// Deregisters and closes `id`'s socket (sending FIN), if the table holds it.
    pub(super) fn close(&mut self, registry: &Registry, id: ClientId) {
        let Some(cell) = self.slots.get_mut(id.key as usize) else {
            return;
        };
        if cell.as_ref().is_some_and(|s| s.generation == id.generation)
            && let Some(mut slot) = cell.take()
        {
            let _ = registry.deregister(&mut slot.stream);
            let _ = slot.stream.shutdown(Shutdown::Write);
        }
    }
}
