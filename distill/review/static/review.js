// Keyboard shortcuts for fast review. Plain JS, no dependencies; the page works without it (links and forms).
// List:   j/k move the selection, Enter or o opens, a accepts, r rejects, / searches.
// Record: j/k next/previous record in the same filter, a accept, r reject, c change, u back to the list.
(function () {
  "use strict";
  const page = document.body.dataset.page;

  function typing(event) {
    const t = event.target;
    return t && (t.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(t.tagName));
  }

  function listPage() {
    const rows = Array.from(document.querySelectorAll("#records tbody tr[data-key]"));
    let index = Math.max(0, rows.findIndex((r) => r.classList.contains("selected")));
    function select(i) {
      if (!rows.length) return;
      rows.forEach((r) => r.classList.remove("selected"));
      index = Math.min(rows.length - 1, Math.max(0, i));
      rows[index].classList.add("selected");
      rows[index].scrollIntoView({ block: "nearest" });
    }
    function quick(action) {
      const row = rows[index];
      if (!row || row.dataset.fixable !== "1") return;
      const form = document.getElementById("quick");
      const query = window.location.search;
      form.action = "/record/" + encodeURIComponent(row.dataset.key) + "/fix" + query;
      form.elements.action.value = action;
      form.elements.sel.value = String(index);
      form.submit();
    }
    rows.forEach((row, i) => row.addEventListener("click", () => select(i)));
    document.addEventListener("keydown", (event) => {
      if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
      const keys = {
        j: () => select(index + 1),
        k: () => select(index - 1),
        a: () => quick("accept"),
        r: () => quick("reject"),
        o: () => rows[index] && rows[index].querySelector("td.text a").click(),
        Enter: () => rows[index] && rows[index].querySelector("td.text a").click(),
        "/": () => document.getElementById("search").focus(),
      };
      if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
    });
    if (rows.length) select(index);
  }

  function recordPage() {
    const skill = document.getElementById("skill");
    function showFields() {
      document.querySelectorAll("fieldset[data-skill]").forEach((set) => {
        set.hidden = set.dataset.skill !== skill.value;
      });
    }
    if (skill) skill.addEventListener("change", showFields);
    function go(id) { const link = document.getElementById(id); if (link) link.click(); }
    function press(id) { const b = document.getElementById(id); if (b && !b.disabled) b.click(); }
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && typing(event)) { event.target.blur(); return; }
      if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
      const keys = {
        j: () => go("next"), k: () => go("prev"), u: () => go("up"),
        a: () => press("accept"), r: () => press("reject"),
        c: () => skill && skill.focus(),
      };
      if (keys[event.key]) { event.preventDefault(); keys[event.key](); }
    });
  }

  if (page === "labels") listPage();
  if (page === "record") recordPage();
})();
