// What the React scripts (react_hooks.mjs, react_tools.mjs, react_conversation.mjs) read a
// rendered tree with, as a user would, and how they wait for it: no act(), a deadline.

/** The text of every element with `data-role` = role, as a user would read it. */
export function shown(renderer, role) {
  // React 19 renders concurrently: until the first commit there is no tree to read.
  if (!renderer.toJSON()) return [];
  return renderer.root.findAll((n) => n.props["data-role"] === role && typeof n.type === "string")
    .map((n) => n.children.join(""));
}

/** Lets React and the socket work until `check` holds, or fails after `ms`. */
export async function waitFor(check, what, ms = 8000) {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
