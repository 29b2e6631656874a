//! The task graph of one DAG (petgraph): edges, order, cycles, and Mermaid or DOT renderings.

use petgraph::Direction;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

/// Edges from each upstream task to its downstream tasks; nodes are task indexes.
#[derive(Clone, Debug, Default)]
pub struct TaskGraph {
    graph: DiGraph<usize, ()>,
}

impl TaskGraph {
    /// A graph of `task_count` tasks with the given `(upstream, downstream)` edges.
    pub fn new(task_count: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let mut graph = DiGraph::with_capacity(task_count, task_count);
        for index in 0..task_count {
            graph.add_node(index);
        }
        for (upstream, downstream) in edges {
            graph.add_edge(NodeIndex::new(upstream), NodeIndex::new(downstream), ());
        }
        Self { graph }
    }

    /// Every `(upstream, downstream)` edge.
    pub fn edges(&self) -> Vec<(usize, usize)> {
        let mut edges: Vec<_> = self
            .graph
            .raw_edges()
            .iter()
            .map(|edge| (edge.source().index(), edge.target().index()))
            .collect();
        edges.sort_unstable();
        edges
    }

    /// The tasks `task` depends on directly.
    pub fn upstream(&self, task: usize) -> Vec<usize> {
        self.neighbours(task, Direction::Incoming)
    }

    /// The tasks that depend directly on `task`.
    pub fn downstream(&self, task: usize) -> Vec<usize> {
        self.neighbours(task, Direction::Outgoing)
    }

    fn neighbours(&self, task: usize, direction: Direction) -> Vec<usize> {
        let mut found: Vec<_> = self
            .graph
            .neighbors_directed(NodeIndex::new(task), direction)
            .map(NodeIndex::index)
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }

    /// Each cycle once, as the tasks along it (the first task is not repeated at the end).
    pub fn cycles(&self) -> Vec<Vec<usize>> {
        let mut cycles = Vec::new();
        for component in tarjan_scc(&self.graph) {
            let self_loop =
                component.len() == 1 && self.graph.contains_edge(component[0], component[0]);
            if component.len() > 1 || self_loop {
                cycles.push(self.cycle_within(&component));
            }
        }
        cycles.sort();
        cycles
    }

    /// A simple cycle through the smallest task of a strongly connected component.
    fn cycle_within(&self, component: &[NodeIndex]) -> Vec<usize> {
        let start = component.iter().copied().min().unwrap_or_default();
        let mut path = vec![start];
        let mut visited = vec![start];
        while let Some(&current) = path.last() {
            let mut next_steps: Vec<NodeIndex> = self
                .graph
                .neighbors_directed(current, Direction::Outgoing)
                .filter(|n| component.contains(n))
                .collect();
            next_steps.sort_unstable();
            if next_steps.contains(&start) {
                break;
            }
            match next_steps.into_iter().find(|n| !visited.contains(n)) {
                Some(next) => {
                    visited.push(next);
                    path.push(next);
                }
                None => {
                    path.pop();
                }
            }
        }
        path.into_iter().map(NodeIndex::index).collect()
    }
}

/// A Mermaid flowchart of the tasks: `(id, type)` per task and the graph's edges.
pub fn mermaid(tasks: &[(&str, &str)], graph: &TaskGraph) -> String {
    let mut out = String::from("flowchart LR\n");
    for (index, (id, kind)) in tasks.iter().enumerate() {
        out.push_str(&format!(
            "    t{index}[\"{id}<br/><small>{kind}</small>\"]\n"
        ));
    }
    for (upstream, downstream) in graph.edges() {
        out.push_str(&format!("    t{upstream} --> t{downstream}\n"));
    }
    out
}

/// A Graphviz DOT digraph of the tasks.
pub fn dot(dag_id: &str, tasks: &[(&str, &str)], graph: &TaskGraph) -> String {
    let escape = |text: &str| text.replace('\\', "\\\\").replace('"', "\\\"");
    let quote = |text: &str| format!("\"{}\"", escape(text));
    let mut out = format!(
        "digraph {} {{\n    rankdir=LR;\n    node [shape=box];\n",
        quote(dag_id)
    );
    for (id, kind) in tasks {
        out.push_str(&format!(
            "    {} [label=\"{}\\n({})\"];\n",
            quote(id),
            escape(id),
            escape(kind)
        ));
    }
    for (upstream, downstream) in graph.edges() {
        out.push_str(&format!(
            "    {} -> {};\n",
            quote(tasks[upstream].0),
            quote(tasks[downstream].0)
        ));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_a_diamond() {
        let graph = TaskGraph::new(4, [(0, 1), (0, 2), (1, 3), (2, 3)]);
        assert_eq!(graph.upstream(3), [1, 2]);
        assert_eq!(graph.downstream(0), [1, 2]);
        assert!(graph.cycles().is_empty());
    }

    #[test]
    fn finds_each_cycle_once() {
        // 0 -> 1 -> 2 -> 0, and 3 -> 3.
        let graph = TaskGraph::new(5, [(0, 1), (1, 2), (2, 0), (3, 3), (2, 4)]);
        assert_eq!(graph.cycles(), vec![vec![0, 1, 2], vec![3]]);
    }

    #[test]
    fn renders_mermaid_and_dot() {
        let graph = TaskGraph::new(2, [(0, 1)]);
        let tasks = [("extract", "command"), ("load", "noop")];
        assert!(mermaid(&tasks, &graph).contains("t0 --> t1"));
        assert!(dot("d", &tasks, &graph).contains("\"extract\" -> \"load\";"));
    }
}
