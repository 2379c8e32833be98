//! Step 4's outbox (see `sink::outbox`): a run records what it may change before it changes
//! anything, what it changed once it ends, and then hands the output's pending changes to its
//! consumers: the command's `--changed-list` and the tileset's CDN purge targets.

use std::sync::Arc;

use crate::config::S3Config;
use crate::error::Result;
use crate::plan::Work;
use crate::sink::changed_list::CHANGED_LIST_CONSUMER;
use crate::sink::outbox::{Backlog, Outbox, OutboxRun, Planned};
use crate::sink::{self, ChangedList, OutputTarget};

/// One output's outbox during a run.
pub(super) struct RunOutbox {
    outbox: Arc<Outbox>,
    run: Option<OutboxRun>,
    keeps_stopped_tiles: bool,
    /// Who takes this output's changes: `--changed-list` when the command writes one.
    consumers: Vec<String>,
}

impl RunOutbox {
    /// Opens the output's outbox and starts recording this run's changes; `part` tags a shard's
    /// files.
    pub async fn open(
        target: &OutputTarget,
        s3: &S3Config,
        part: Option<String>,
        changed: &ChangedList,
    ) -> Result<RunOutbox> {
        let kind = sink::kind_of(target);
        let outbox = Outbox::new(kind.outbox(s3).await?, part);
        let run = outbox.start()?;
        let mut consumers = Vec::new();
        if changed.is_enabled() {
            consumers.push(CHANGED_LIST_CONSUMER.to_string());
        }
        Ok(RunOutbox {
            outbox: Arc::new(outbox),
            run: Some(run),
            keeps_stopped_tiles: kind.keeps_stopped_tiles(),
            consumers,
        })
    }

    /// What the output's sink records its changes to.
    pub fn recorder(&self) -> ChangedList {
        self.run
            .as_ref()
            .map_or_else(ChangedList::disabled, OutboxRun::recorder)
    }

    /// Once the output is open (its `state` read) and the work decided, and before any tile is
    /// written: settles what a stopped run left, then records what this run may change.
    pub async fn intend(&self, state: Option<&str>, work: &Work) -> Result<()> {
        self.outbox.recover(state, self.keeps_stopped_tiles).await?;
        let Some(run) = &self.run else {
            return Ok(());
        };
        let planned = match work {
            Work::Pyramid => Planned::Everything,
            Work::Tiles(tiles) => Planned::Tiles(tiles),
        };
        self.outbox.intend(run, state, planned).await
    }

    /// Ends the run's entry (its batch stored, its intent removed; after a failure, when the output
    /// kept nothing of the run, only its intent removed), then hands every pending batch to the consumers. The command's `--changed-list`
    /// marks what it took once the list is in place.
    pub async fn commit_and_deliver(&mut self, changed: &ChangedList, failed: bool) -> Result<()> {
        match self.run.take() {
            Some(run) if failed && !self.keeps_stopped_tiles => self.outbox.discard(run).await?,
            Some(run) => self.outbox.commit(run).await?,
            None => {}
        }
        if changed.is_enabled() {
            let pending = self.outbox.pending(CHANGED_LIST_CONSUMER).await?;
            if !pending.is_empty() {
                let (names, lines): (Vec<String>, Vec<Vec<String>>) = pending.into_iter().unzip();
                let outbox = self.outbox.clone();
                let consumers = self.consumers.clone();
                changed.take_lines(
                    lines.into_iter().flatten(),
                    Box::new(move || {
                        Box::pin(async move {
                            outbox
                                .taken(CHANGED_LIST_CONSUMER, &names, &consumers)
                                .await
                        })
                    }),
                );
            }
        }
        self.outbox.prune(&self.consumers).await
    }

    /// What the outbox holds for consumers now.
    pub async fn backlog(&self) -> Result<Backlog> {
        self.outbox.backlog().await
    }
}
