// apigen-mt view: new shards show by themselves. Every 2 s the page asks /api/version (a digest of the run folder's
// shard list and manifest); when it changed, a live page (overview, trials, blueprints) reloads itself, unless the
// user is typing in a filter; any other page says that there is new data.
(function () {
  const shown = document.body.dataset.version;
  const live = document.body.hasAttribute("data-live");
  const status = document.getElementById("live-status");
  if (!shown) return;
  async function check() {
    try {
      const answer = await fetch("/api/version", { cache: "no-store" });
      const { version } = await answer.json();
      const typing = document.activeElement && ["INPUT", "SELECT"].includes(document.activeElement.tagName);
      if (version !== shown && live && !typing) {
        location.reload();
        return;
      }
      status.textContent = version !== shown ? "new data: reload to see it" : "live · checked " + new Date().toLocaleTimeString();
    } catch (error) {
      status.textContent = "the viewer is not answering";
    }
  }
  setInterval(check, 2000);
})();
