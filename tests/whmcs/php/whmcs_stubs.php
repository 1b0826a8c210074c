<?php
// Just enough of WHMCS for the invoice-sync addon module: add_hook, localAPI('GetInvoice'),
// logActivity, decrypt, and Capsule (query builder + schema builder) over in-memory tables
// loaded from and saved to JSON. Query semantics follow Laravel's where/orderBy/limit/get.
namespace WHMCS\Database {
    class Builder
    {
        private $table;
        private $where = array();
        private $order = null;
        private $limit = null;

        public function __construct($table)
        {
            $this->table = $table;
            if (!isset($GLOBALS['STUB_TABLES'][$table])) {
                throw new \RuntimeException("Base table or view not found: $table");
            }
        }

        public function where($column, $op, $value = null)
        {
            if (func_num_args() === 2) {
                list($op, $value) = array('=', $op);
            }
            $this->where[] = array($column, $op, $value);
            return $this;
        }

        public function orderBy($column, $direction = 'asc')
        {
            $this->order = array($column, strtolower($direction));
            return $this;
        }

        public function limit($n)
        {
            $this->limit = $n;
            return $this;
        }

        private function matches($row)
        {
            foreach ($this->where as $w) {
                $equal = (string) $row[$w[0]] === (string) $w[2];
                if (($w[1] === '=' && !$equal) || (($w[1] === '!=' || $w[1] === '<>') && $equal)) {
                    return false;
                }
            }
            return true;
        }

        private function rows()
        {
            $rows = array_values(array_filter($GLOBALS['STUB_TABLES'][$this->table], array($this, 'matches')));
            if ($this->order !== null) {
                list($column, $direction) = $this->order;
                usort($rows, function ($a, $b) use ($column, $direction) {
                    $cmp = $a[$column] <=> $b[$column];
                    return $direction === 'desc' ? -$cmp : $cmp;
                });
            }
            return $this->limit === null ? $rows : array_slice($rows, 0, $this->limit);
        }

        public function get()
        {
            return array_map(function ($row) { return (object) $row; }, $this->rows());
        }

        public function exists()
        {
            return count($this->rows()) > 0;
        }

        public function value($column)
        {
            $rows = $this->rows();
            return $rows ? $rows[0][$column] : null;
        }

        public function max($column)
        {
            $values = array_column($this->rows(), $column);
            return $values ? max($values) : null;
        }

        public function update(array $values)
        {
            $n = 0;
            foreach ($GLOBALS['STUB_TABLES'][$this->table] as $i => $row) {
                if ($this->matches($row)) {
                    $GLOBALS['STUB_TABLES'][$this->table][$i] = array_merge($row, $values);
                    $n++;
                }
            }
            return $n;
        }

        public function insert(array $values)
        {
            $rows = &$GLOBALS['STUB_TABLES'][$this->table];
            $values['id'] = count($rows) ? max(array_column($rows, 'id')) + 1 : 1;
            $rows[] = $values;
            return true;
        }
    }

    class Column
    {
        public function __call($name, $args)
        {
            return $this; // ->index(), ->default(), ->nullable(): accepted, not modelled
        }
    }

    class Blueprint
    {
        public $columns = array();

        public function __call($type, $args)
        {
            $this->columns[] = array($type, isset($args[0]) ? $args[0] : null);
            return new Column();
        }
    }

    class SchemaBuilder
    {
        public function hasTable($name)
        {
            return isset($GLOBALS['STUB_TABLES'][$name]);
        }

        public function create($name, $callback)
        {
            $blueprint = new Blueprint();
            $callback($blueprint);
            $GLOBALS['STUB_TABLES'][$name] = array();
            $GLOBALS['STUB_SCHEMAS'][$name] = $blueprint->columns;
        }
    }

    class Capsule
    {
        public static function table($name)
        {
            return new Builder($name);
        }

        public static function schema()
        {
            return new SchemaBuilder();
        }
    }
}

namespace {
    define('WHMCS', true);
    $GLOBALS['STUB_HOOKS'] = array();
    $GLOBALS['STUB_LOG'] = array();
    $GLOBALS['STUB_SCHEMAS'] = array();

    function add_hook($event, $priority, $callback)
    {
        $GLOBALS['STUB_HOOKS'][$event][] = $callback;
    }

    function run_hook($event, array $vars)
    {
        foreach (isset($GLOBALS['STUB_HOOKS'][$event]) ? $GLOBALS['STUB_HOOKS'][$event] : array() as $cb) {
            $cb($vars);
        }
    }

    function logActivity($message)
    {
        $GLOBALS['STUB_LOG'][] = $message;
    }

    // WHMCS's decrypt() of a password-type setting; the tests store such values as "enc:" + token.
    function decrypt($value)
    {
        return strpos($value, 'enc:') === 0 ? substr($value, 4) : '';
    }

    function localAPI($command, array $values)
    {
        if ($command !== 'GetInvoice') {
            return array('result' => 'error', 'message' => 'Command Not Found');
        }
        foreach ($GLOBALS['STUB_TABLES']['tblinvoices'] as $i => $row) {
            if ((int) $row['id'] === (int) $values['invoiceid']) {
                $answer = array_merge(array('result' => 'success', 'invoiceid' => $row['id']), $row);
                // Another writer (an admin, the poller) numbers the invoice right after we read it.
                if (isset($GLOBALS['STUB_RACE'][$row['id']])) {
                    $GLOBALS['STUB_TABLES']['tblinvoices'][$i]['invoicenum'] = $GLOBALS['STUB_RACE'][$row['id']];
                }
                return $answer;
            }
        }
        return array('status' => 'error', 'message' => 'Invoice ID Not Found');
    }
}
