// The table of contents of a planned portrait: the outline's sections in order, each with its word budget.
// While the portrait is written, the section being written is current (aria-current), the ones before it
// done, and each entry links to its heading once the text has it. Titles come from the model: they are
// only ever set as text.

const HEADINGS = "h1, h2, h3, h4, h5, h6";

export class TableOfContents {
  /**
   * @param {HTMLElement} nav the `.portrait-toc` element (an `<ol>` inside)
   * @param {HTMLElement} body the element the portrait is rendered in
   */
  constructor(nav, body) {
    this.nav = nav;
    this.list = nav.querySelector("ol");
    this.body = body;
    /**
     * @type {{item: HTMLElement, link: HTMLAnchorElement, title: string, headingsBefore: number | null,
     *   heading: Element | null}[]}
     */
    this.entries = [];
  }

  /** Forget the sections (a new portrait, or one written without an outline). */
  clear() {
    this.entries = [];
    this.list.replaceChildren();
    this.nav.hidden = true;
  }

  /** @param {{title: string, target_words: number}[]} sections the outline's sections, in order */
  show(sections) {
    this.clear();
    for (const section of sections) {
      const item = document.createElement("li");
      item.dataset.state = "pending";
      const link = document.createElement("a"); // no href (not a link yet) until its heading is written
      link.className = "toc-title";
      link.textContent = section.title;
      const budget = document.createElement("span");
      budget.className = "toc-words";
      budget.textContent = `about ${Number(section.target_words).toLocaleString("en")} words`;
      item.append(link, " ", budget);
      this.list.append(item);
      this.entries.push({ item, link, title: section.title, headingsBefore: null, heading: null });
    }
    this.nav.hidden = this.entries.length === 0;
  }

  /**
   * Section `index` begins: the ones before it are done. Call it with the text so far in the DOM: the
   * headings already there belong to earlier sections.
   * @param {number} index
   */
  start(index) {
    const entry = this.entries[index];
    if (!entry) return;
    this.entries.forEach((other, k) => {
      if (k < index) this.#mark(other, "done");
    });
    entry.headingsBefore = this.body.querySelectorAll(HEADINGS).length;
    this.#mark(entry, "current");
  }

  /** The portrait is complete: every section is done. */
  finish() {
    for (const entry of this.entries) this.#mark(entry, "done");
    this.link();
  }

  /**
   * Give each started section's heading an id and link its entry to it; run after every render (the
   * renderer may replace a heading's element). A section's heading is the first heading below level 1
   * among those written since it began (the first section opens with the portrait's title); once the
   * section is over, its first heading of any level if it has no other.
   */
  link() {
    if (this.entries.length === 0) return;
    const headings = [...this.body.querySelectorAll(HEADINGS)];
    this.entries.forEach((entry, index) => {
      if (entry.headingsBefore === null) return;
      const next = this.entries[index + 1]?.headingsBefore ?? null;
      const own = headings.slice(entry.headingsBefore, next ?? headings.length);
      const over = next !== null || entry.item.dataset.state === "done";
      this.#attach(entry, index, own.find((heading) => heading.tagName !== "H1") ?? (over ? own[0] : null));
    });
  }

  /**
   * A stored portrait rendered by the server: take over its list (every section done) and link each entry
   * to the next heading with its title, in order.
   */
  adopt() {
    const items = [...this.list.querySelectorAll(":scope > li")];
    let headings = [...this.body.querySelectorAll(HEADINGS)];
    this.entries = items.map((item, index) => {
      const link = item.querySelector(".toc-title");
      const entry = { item, link, title: link.textContent, headingsBefore: null, heading: null };
      const at = headings.findIndex((heading) => heading.textContent.trim() === entry.title.trim());
      if (at >= 0) {
        this.#attach(entry, index, headings[at]);
        headings = headings.slice(at + 1);
      }
      return entry;
    });
  }

  #attach(entry, index, heading) {
    if (!heading) return;
    const id = `portrait-section-${index + 1}`;
    if (entry.heading && entry.heading !== heading && entry.heading.id === id) entry.heading.removeAttribute("id");
    entry.heading = heading;
    if (heading.id !== id) heading.id = id;
    if (!entry.link.hasAttribute("href")) entry.link.href = `#${id}`;
  }

  #mark(entry, state) {
    entry.item.dataset.state = state;
    if (state === "current") entry.item.setAttribute("aria-current", "step");
    else entry.item.removeAttribute("aria-current");
  }
}
