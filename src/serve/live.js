// oar-tiles-live.js: keeps an open MapLibre GL JS (5.6 or later) map in step with the changes feed
// of an oar-tiles output (the user guide, docs/src/live-maps.md). `oar-tiles serve` hosts it at
// /assets/oar-tiles-live.js; copy it next to your page from there or from the project
// (src/serve/live.js). MIT licence, as oar-tiles.
//
//   import { followChanges } from "./oar-tiles-live.js";
//   const map = new maplibregl.Map({ /* a vector source "tiles" */ });
//   followChanges(map, {
//     source: "tiles",                                              // the vector source's id
//     feed: "https://tiles.example.org/facilities/changes",         // its changes/ folder
//     events: "https://watch.example.org/changes/facilities/events", // optional: watch's SSE
//   });
//
// For each tile a segment lists:
// - in view, `map.refreshTiles` loads it again;
// - held off screen in MapLibre's own tile cache, it is dropped from there, so it is loaded again
//   when the visitor pans back to it (`refreshTiles` reloads only tiles in view);
// - and its next request, whenever it comes, bypasses the browser's HTTP cache
//   (`cache: "no-cache"`, through the map's `transformRequest`): the browser asks the server
//   (a 304 when the tile did not change after all), so it works against any origin, even one
//   that lets browsers keep tiles for a day.
// A segment that says `reload`, or a gap past the feed's retention, does this for every tile.
// A versioned feed's segment (`versioned = true`, listed before the CDNs purged) carries a
// `tile_version`: its tiles are asked for with `?v=VERSION` from then on, a URL no cache has seen, so
// neither the browser's cache nor the CDN's can answer with the earlier bytes; tiles no segment
// listed keep their plain URL.
//
// Changes arrive by `oar-tiles watch`'s Server-Sent Events while `events` answers, and otherwise
// by reading `feed`'s head.json every `interval` milliseconds (default 1000).
//
// Options: `source` ("tiles"), `feed`, `events`, `interval` (1000), `since` (the head's sequence
// read before the map's tiles loaded: a change published meanwhile is then not missed; by
// default the first head read), `transformRequest` (the map's own, which this one calls first).
// Returns the follower's state (`sequence`, `transport`: "events" or "poll", counts of tiles
// `refreshed`, `dropped` off screen, requests `bypassed` and `versioned`, `reloads`, the last
// `error`, which says why the feed could not be read) with a `stop()` method. `onError`, if given,
// is called with each such message, and `onChange` with the state each time the map was brought
// to a later sequence (figures a page shows of the output can be read again then).

const TILE_IN_URL = /\/(\d+)\/(\d+)\/(\d+)(?:\.[A-Za-z0-9]+)?(?:[?#].*)?$/;
// Tiles remembered one by one; past this many, a segment counts as a reload.
const MAX_LISTED = 100000;
// How long a closed event stream waits before it is tried again, meanwhile polling.
const EVENTS_RETRY_MS = 30000;

const keyOf = (z, x, y) => `${z}/${x}/${y}`;

/// A function from a tile URL of `template` (`…/{z}/{x}/{y}.pbf`) to its "z/x/y", or null.
function tileKeyReader(template) {
  if (typeof template === "string" && template.includes("{z}") && template.includes("{x}") &&
      template.includes("{y}")) {
    const names = [];
    const pattern = template.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")
      .replace(/\\\{([a-z]+)\\\}/g, (_, name) => {
        names.push(name);
        return ["z", "x", "y"].includes(name) ? "(\\d+)" : "[^/?#]*";
      });
    const exact = new RegExp(`^${pattern}(?:[?#].*)?$`);
    return (url) => {
      const match = exact.exec(url);
      if (!match) return null;
      const value = {};
      names.forEach((name, i) => { value[name] = match[i + 1]; });
      return keyOf(Number(value.z), Number(value.x), Number(value.y));
    };
  }
  return (url) => {
    const match = TILE_IN_URL.exec(url);
    return match ? keyOf(Number(match[1]), Number(match[2]), Number(match[3])) : null;
  };
}

/// `url` with `v=version` added to its query string.
function withVersion(url, version) {
  const hash = url.indexOf("#");
  const [base, fragment] = hash < 0 ? [url, ""] : [url.slice(0, hash), url.slice(hash)];
  const separator = base.includes("?") ? "&" : "?";
  return `${base}${separator}v=${encodeURIComponent(version)}${fragment}`;
}

export function followChanges(map, options = {}) {
  const sourceId = options.source ?? "tiles";
  const feed = options.feed ? String(options.feed).replace(/\/+$/, "") : null;
  const events = options.events ?? null;
  const interval = options.interval ?? 1000;
  const chained = options.transformRequest ?? null;
  const state = {
    sequence: options.since ?? null, transport: null, refreshed: 0, dropped: 0, bypassed: 0,
    reloads: 0, polls: 0, versioned: 0, error: null, stop,
  };
  const onError = options.onError ?? null;
  const onChange = options.onChange ?? null;
  // A versioned feed's tiles: "z/x/y" → the version its next requests carry.
  const versions = new Map();
  // After a versioned reload, the version of every tile not listed since.
  let reloadVersion = null;
  // Tiles whose next request bypasses the browser's cache: "z/x/y" → whether it was sent.
  const listed = new Map();
  // After a reload every tile is stale: the ones fetched anew since.
  let fetchedSinceReload = null;
  let stopped = false;

  let readerTemplate, readKey = tileKeyReader(null);
  const tileKey = (url) => {
    const source = map.getSource(sourceId);
    const template = source && Array.isArray(source.tiles) ? source.tiles[0] : null;
    if (template !== readerTemplate) {
      readerTemplate = template;
      readKey = tileKeyReader(template);
    }
    return readKey(url);
  };

  map.setTransformRequest((url, type) => {
    const request = (chained && chained(url, type)) || { url };
    if (type !== "Tile") return request;
    const key = tileKey(request.url ?? url);
    if (key === null) return request;
    const version = versions.get(key) ?? reloadVersion;
    if (version !== null && version !== undefined) {
      state.versioned += 1;
      return { ...request, url: withVersion(request.url ?? url, version) };
    }
    const stale = listed.has(key) ||
      (fetchedSinceReload !== null && !fetchedSinceReload.has(key));
    if (!stale) return request;
    listed.set(key, true);
    state.bypassed += 1;
    return { ...request, cache: "no-cache" };
  });

  // A tile loaded after its bypassing request was sent is fresh in the browser's cache again.
  const onData = (event) => {
    if (event.sourceId !== sourceId || !event.tile) return;
    const id = event.tile.tileID.canonical;
    const key = keyOf(id.z, id.x, id.y);
    if (listed.get(key) !== true) return;
    listed.delete(key);
    if (fetchedSinceReload !== null && fetchedSinceReload.size < MAX_LISTED) {
      fetchedSinceReload.add(key);
    }
  };
  map.on("sourcedata", onData);

  // MapLibre keeps tiles that left the view in a cache of their own, which `refreshTiles` does
  // not touch: drop the listed ones. Its name changed with 5.x (`sourceCaches` → `tileManagers`,
  // `_cache` → `_outOfViewCache`); a version with neither reloads the source instead.
  function dropOffScreen(keys) {
    const style = map.style;
    const managers = style && (style.tileManagers || style.sourceCaches);
    const manager = managers && managers[sourceId];
    const cache = manager && (manager._outOfViewCache || manager._cache);
    if (!cache || typeof cache.filter !== "function") return false;
    cache.filter((tile) => {
      const id = tile.tileID.canonical;
      const drop = keys.has(keyOf(id.z, id.x, id.y));
      if (drop) state.dropped += 1;
      return !drop;
    });
    return true;
  }

  function reloadAll(version = null) {
    listed.clear();
    versions.clear();
    reloadVersion = version;
    fetchedSinceReload = new Set();
    // Every tile in view again, and MapLibre's off-screen cache emptied.
    map.refreshTiles(sourceId);
    state.reloads += 1;
  }

  function applySegment(segment) {
    const version = typeof segment.tile_version === "string" ? segment.tile_version : null;
    if (segment.reload ||
        listed.size + versions.size + segment.tiles.length > MAX_LISTED) {
      reloadAll(version);
      return;
    }
    if (segment.tiles.length === 0) return;
    const keys = new Set(segment.tiles);
    for (const key of keys) {
      if (version !== null) {
        versions.set(key, version);
        listed.delete(key);
      } else {
        versions.delete(key);
        listed.set(key, false);
      }
      fetchedSinceReload?.delete(key);
    }
    if (!dropOffScreen(keys)) {
      reloadAll();
      return;
    }
    map.refreshTiles(sourceId, segment.tiles.map((tile) => {
      const [z, x, y] = tile.split("/").map(Number);
      return { z, x, y };
    }));
    state.refreshed += segment.tiles.length;
  }

  // Brings the map from `state.sequence` to `head.sequence`, reading the segments in between.
  async function catchUp(head) {
    if (state.sequence === null) {
      state.sequence = head.sequence;
      return;
    }
    if (head.sequence <= state.sequence) return;
    if ((head.version ?? 1) > 1 || (head.oldest ?? 1) > state.sequence + 1 || !feed) {
      reloadAll();
      state.sequence = head.sequence;
      return;
    }
    for (let n = state.sequence + 1; n <= head.sequence && !stopped; n += 1) {
      const response = await fetch(`${feed}/${n}.json`);
      applySegment(response.ok ? await response.json() : { reload: true });
      state.sequence = n;
    }
  }

  // One step at a time, whichever way the news came.
  let queue = Promise.resolve();
  const serially = (step) => {
    queue = queue.then(async () => {
      const before = state.sequence;
      await step();
      if (onChange && before !== null && state.sequence !== before) onChange(state);
    }).then(() => { state.error = null; },
      (error) => {
        state.error = error instanceof Error ? error.message : String(error);
        if (onError) onError(state.error);
      });
    return queue;
  };

  let pollTimer = null, pollRound = 0;
  async function poll() {
    state.polls += 1;
    const where = `${feed}/head.json`;
    let response;
    try {
      response = await fetch(where, { cache: "no-store" });
    } catch (error) {
      // The browser hides why; on another origin it is mostly a missing header.
      throw new Error(`${where} could not be read (${error}): the server is down, or, on ` +
        "another origin than the page, it does not send Access-Control-Allow-Origin " +
        "(see the user guide, live-maps.md)");
    }
    if (response.status === 404) {
      // The feed went away with its output (a partition whose rows all vanished): whatever the
      // map shows of it is gone too. Before the first publication there is no head yet either.
      if (state.sequence) {
        reloadAll();
        state.sequence = 0;
      }
      throw new Error(`${where}: HTTP 404: no feed there (is \`feed\` the URL of the ` +
        "output's changes/ folder, and has a run with [tileset.feed] published yet?)");
    }
    if (!response.ok) throw new Error(`${where}: HTTP ${response.status}`);
    const text = await response.text();
    let head;
    try {
      head = JSON.parse(text);
    } catch (error) {
      throw new Error(`${where}: not JSON (${error}): is \`feed\` the URL of the output's ` +
        `changes/ folder? It answered ${JSON.stringify(text.slice(0, 60))}`);
    }
    if (!head || head.format !== "oar-tiles-changes" || !Number.isInteger(head.sequence)) {
      throw new Error(`${where}: not a feed head (no "format": "oar-tiles-changes" and ` +
        `"sequence"): it answered ${JSON.stringify(text.slice(0, 60))}`);
    }
    await catchUp(head);
  }
  function startPolling() {
    if (pollTimer !== null || !feed || stopped) return;
    state.transport = "poll";
    // A poll still running when polling stopped and started again must not start a second round.
    const round = ++pollRound;
    const tick = () => {
      pollTimer = setTimeout(() => serially(poll).then(() => {
        if (round === pollRound && pollTimer !== null) tick();
      }), interval);
    };
    if (state.sequence === null) serially(poll);
    tick();
  }
  function stopPolling() {
    clearTimeout(pollTimer);
    pollTimer = null;
    pollRound += 1;
  }

  let stream = null, retry = null;
  function openEvents() {
    if (stopped) return;
    stream = new EventSource(events);
    stream.addEventListener("open", () => {
      stopPolling();
      state.transport = "events";
    });
    stream.addEventListener("head", (event) => serially(() => catchUp(JSON.parse(event.data))));
    stream.addEventListener("reload", (event) => serially(() => {
      reloadAll();
      state.sequence = JSON.parse(event.data).sequence;
    }));
    stream.addEventListener("segment", (event) => serially(async () => {
      const segment = JSON.parse(event.data);
      if (state.sequence !== null && segment.sequence <= state.sequence) return;
      if (state.sequence !== null && segment.sequence > state.sequence + 1) {
        await catchUp({ sequence: segment.sequence - 1 });
      }
      applySegment(segment);
      state.sequence = segment.sequence;
    }));
    stream.addEventListener("error", () => {
      // Reconnecting (the browser does, resuming with Last-Event-ID) or refused for good (503
      // past watch.max_event_clients, no watcher): poll meanwhile.
      startPolling();
      if (stream.readyState === EventSource.CLOSED) {
        stream = null;
        retry = setTimeout(openEvents, EVENTS_RETRY_MS);
      }
    });
  }

  function stop() {
    stopped = true;
    stopPolling();
    clearTimeout(retry);
    if (stream) stream.close();
    map.off("sourcedata", onData);
  }

  if (events && typeof EventSource === "function") {
    openEvents();
  } else {
    startPolling();
  }
  return state;
}
